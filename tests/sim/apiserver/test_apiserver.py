#!/usr/bin/python3
"""Unit tests of meshsim's API server (rootless): store, selectors, patches,
pagination, watch resume/410/bookmarks, RBAC, service-account tokens and
TokenReview, and the Python client
(Debian's python3-kubernetes) against a server on 127.0.0.1 over TLS.

Expected behaviour is the real API server's: selector grammar from
k8s.io/apimachinery/pkg/labels/selector.go, 410 "too old resource version" as a
watch ERROR event from k8s.io/apiserver/pkg/storage/cacher, strategic merge keys
from k8s.io/api/core/v1/types.go, continue tokens from storage/etcd3/store.go."""
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from meshsim_apiserver import patch as patches  # noqa: E402
from meshsim_apiserver.selectors import FieldSelector, LabelSelector, SelectorError  # noqa: E402
from meshsim_apiserver.store import Gone, Store  # noqa: E402

RBAC = os.path.join(HERE, "..", "..", "..", "deploy", "daemonset", "base", "rbac.yaml")


class SelectorTest(unittest.TestCase):
    def test_equality_and_sets(self):
        s = LabelSelector.parse("app in (web, db),tier!=front,env,!legacy")
        self.assertTrue(s.matches({"app": "web", "env": "x"}))
        self.assertFalse(s.matches({"app": "web", "env": "x", "legacy": ""}))
        self.assertFalse(s.matches({"app": "web", "tier": "front", "env": "x"}))
        self.assertFalse(s.matches({"app": "api", "env": "x"}))
        self.assertTrue(LabelSelector.parse("a==b").matches({"a": "b"}))
        self.assertTrue(LabelSelector.parse("a notin (x)").matches({}))

    def test_bad_selector(self):
        with self.assertRaises(SelectorError):
            LabelSelector.parse("a in b")
        with self.assertRaises(SelectorError):
            FieldSelector.parse("spec.bogus=1", {"metadata.name"})

    def test_field_selector(self):
        f = FieldSelector.parse("status.phase!=Failed,spec.nodeName=node-a", {"status.phase", "spec.nodeName"})
        self.assertTrue(f.matches({"spec": {"nodeName": "node-a"}, "status": {"phase": "Running"}}))
        self.assertFalse(f.matches({"spec": {"nodeName": "node-b"}, "status": {"phase": "Running"}}))


class PatchTest(unittest.TestCase):
    def test_merge_patch_rfc7386(self):
        self.assertEqual(patches.merge_patch({"a": {"b": 1, "c": 2}}, {"a": {"b": None, "d": 3}}), {"a": {"c": 2, "d": 3}})

    def test_strategic_merges_containers_by_name_and_ports_by_port(self):
        pod = {"spec": {"containers": [{"name": "app", "image": "a", "ports": [{"containerPort": 80}]}]}}
        out = patches.strategic_merge_patch(pod, {"spec": {"$setElementOrder/containers": [{"name": "app"}],
                                                           "containers": [{"name": "app", "image": "b"}]}}, "Pod")
        self.assertEqual(out["spec"]["containers"], [{"name": "app", "image": "b", "ports": [{"containerPort": 80}]}])
        svc = {"spec": {"ports": [{"port": 80, "name": "http"}, {"port": 90, "name": "x"}]}}
        out = patches.strategic_merge_patch(svc, {"spec": {"ports": [{"port": 90, "$patch": "delete"}]}}, "Service")
        self.assertEqual(out["spec"]["ports"], [{"port": 80, "name": "http"}])

    def test_strategic_replace_directive_and_tolerations_replace(self):
        out = patches.strategic_merge_patch({"spec": {"a": {"x": 1}}}, {"spec": {"a": {"$patch": "replace", "y": 2}}}, "Pod")
        self.assertEqual(out, {"spec": {"a": {"y": 2}}})
        out = patches.strategic_merge_patch({"spec": {"tolerations": [{"key": "a"}]}},
                                            {"spec": {"tolerations": [{"key": "b"}]}}, "Pod")
        self.assertEqual(out["spec"]["tolerations"], [{"key": "b"}])

    def test_json_patch(self):
        out = patches.json_patch({"a": [1, 2]}, [{"op": "add", "path": "/a/-", "value": 3},
                                                 {"op": "replace", "path": "/a/0", "value": 0},
                                                 {"op": "test", "path": "/a/1", "value": 2}])
        self.assertEqual(out, {"a": [0, 2, 3]})
        with self.assertRaises(patches.PatchError):
            patches.json_patch({"a": 1}, [{"op": "remove", "path": "/b"}])


class TableTest(unittest.TestCase):
    """Server-side printing: k8s.io/apimachinery/pkg/util/duration.HumanDuration and
    the pod columns of pkg/printers/internalversion/printers.go."""

    def test_human_duration(self):
        from meshsim_apiserver.resources import human_duration
        cases = {5: "5s", 119: "119s", 150: "2m30s", 600: "10m", 185 * 60: "3h5m", 30 * 3600: "30h",
                 3 * 86400: "3d", 3 * 86400 + 5 * 3600: "3d5h", 400 * 86400: "400d"}
        for seconds, text in cases.items():
            self.assertEqual(human_duration(seconds), text, seconds)

    def test_pod_columns(self):
        from meshsim_apiserver import resources as res
        pods = next(r for r in res.BUILTINS if r.kind == "Pod")
        pod = {"metadata": {"name": "web", "creationTimestamp": "2026-01-01T00:00:00Z"},
               "spec": {"containers": [{"name": "a"}, {"name": "b"}], "nodeName": "n1"},
               "status": {"phase": "Running", "podIP": "10.0.0.1",
                          "containerStatuses": [{"ready": True, "restartCount": 2}, {"ready": False}]}}
        t = res.table(pods, [pod], "v1", "None")
        self.assertEqual([c["name"] for c in t["columnDefinitions"]][:5], ["Name", "Ready", "Status", "Restarts", "Age"])
        self.assertEqual(t["rows"][0]["cells"][:4], ["web", "1/2", "Running", 2])
        self.assertNotIn("object", t["rows"][0])


class StoreTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="msim-store-")

    def tearDown(self):
        shutil.rmtree(self.dir)

    def pod(self, name):
        return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "ns"}}

    def test_restart_keeps_objects_history_and_counter(self):
        s = Store(self.dir)
        s.write("/pods", "ADDED", self.pod("a"))
        s.write("/pods", "ADDED", self.pod("b"))
        rv = s.rv
        s.close()
        s2 = Store(self.dir)
        self.assertEqual(s2.rv, rv)
        self.assertEqual([o["metadata"]["name"] for o in s2.list("/pods")[1]], ["a", "b"])
        w, _ = s2.watch("/pods", None, rv - 1)  # resume across the restart
        self.assertEqual(w.queue.get_nowait().obj["metadata"]["name"], "b")
        s2.write("/pods", "ADDED", self.pod("c"))
        self.assertEqual(s2.rv, rv + 1)

    def test_compact_gives_410(self):
        s = Store(self.dir)
        s.write("/pods", "ADDED", self.pod("a"))
        old = s.rv
        s.write("/pods", "ADDED", self.pod("b"))
        s.compact()
        with self.assertRaises(Gone):
            s.watch("/pods", None, old)
        s.watch("/pods", None, s.rv)  # from the compaction point on is fine

    def test_bounded_history(self):
        s = Store(None, history_size=3)
        for i in range(5):
            s.write("/pods", "ADDED", self.pod(f"p{i}"))
        with self.assertRaises(Gone):
            s.watch("/pods", None, 1)
        s.watch("/pods", None, 2)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# What a CA needs (the TokenReview half of system:auth-delegator, and reading pods),
# as the extra RBAC file a caller passes to `main.py init --rbac`.
CA_RBAC = """apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: system:auth-delegator}
rules:
- {apiGroups: [authentication.k8s.io], resources: [tokenreviews], verbs: [create]}
- {apiGroups: [authorization.k8s.io], resources: [subjectaccessreviews], verbs: [create]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: meshlock-ca}
rules:
- {apiGroups: [""], resources: [pods], verbs: [get, list, watch]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: meshlock-ca-auth-delegator}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: system:auth-delegator}
subjects: [{kind: ServiceAccount, name: meshlock-ca, namespace: meshlock-system}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: meshlock-ca}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: meshlock-ca}
subjects: [{kind: ServiceAccount, name: meshlock-ca, namespace: meshlock-system}]
"""


class RunningServer:
    """A real server process (main.py serve) on 127.0.0.1, no netns: the seed below,
    two nodes in the run's state file (so node agent pods), the agent's RBAC and the CA's."""

    SEED_EXTRA = ""  # more seed objects (YAML documents) for a subclass

    @classmethod
    def ca_rbac(cls):
        """The CA's RBAC file contents (a subclass may use deploy/ca/rbac.yaml itself)."""
        return CA_RBAC

    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="msim-api-")
        seed = os.path.join(cls.dir, "seed.yaml")
        with open(seed, "w") as f:
            f.write("apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n---\n"
                    "apiVersion: v1\nkind: Pod\nmetadata: {name: web, namespace: shop, labels: {app: web}}\n"
                    "spec: {nodeName: node-a, containers: [{name: app, image: x, ports: [{containerPort: 8080}]}]}\n"
                    "status: {phase: Running, podIP: 10.244.1.10, containerStatuses: [{name: app, ready: true}]}\n---\n"
                    "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: shop}\n"
                    "spec: {clusterIP: 10.96.10.10, selector: {app: web}, ports: [{port: 80, targetPort: 8080}]}\n"
                    + cls.SEED_EXTRA)
        state = os.path.join(cls.dir, "state.json")
        with open(state, "w") as f:
            json.dump({"nodes": [{"name": "node-a", "nodeIP": "172.18.0.2", "podCIDR": "10.244.1.0/24"},
                                 {"name": "node-b", "nodeIP": "172.18.0.3", "podCIDR": "10.244.2.0/24"}]}, f)
        ca_rbac = os.path.join(cls.dir, "ca-rbac.yaml")
        with open(ca_rbac, "w") as f:
            f.write(cls.ca_rbac())
        cls.kube = os.path.join(cls.dir, "kube")
        main = os.path.join(HERE, "main.py")
        subprocess.run([sys.executable, main, "init", cls.kube, "--run", "unit", "--host-port", str(free_port()),
                        "--rbac", RBAC, "--rbac", ca_rbac, "--crds", os.path.join(HERE, "crds.yaml"), "--seed", seed,
                        "--state", state, "--manifest-dir", os.path.join(cls.dir, "manifests")],
                       check=True, stdout=subprocess.DEVNULL)
        subprocess.run([sys.executable, main, "start", cls.kube], check=True, stdout=subprocess.DEVNULL)
        with open(os.path.join(cls.kube, "config.json")) as f:
            cls.cfg = json.load(f)
        with open(cls.cfg["tokenFile"]) as f:
            rows = [line.split(",") for line in f]
        cls.admin = rows[0][0]
        cls.agent = rows[1][0]
        cls.base = f"https://127.0.0.1:{cls.cfg['hostPort']}"
        cls.ctx = ssl.create_default_context(cafile=cls.cfg["caFile"])

    @classmethod
    def tearDownClass(cls):
        subprocess.run([sys.executable, os.path.join(HERE, "main.py"), "stop", cls.kube], stdout=subprocess.DEVNULL)
        shutil.rmtree(cls.dir)

    def call(self, method, path, body=None, token=None, ctype="application/json", accept="application/json"):
        req = urllib.request.Request(self.base + path, method=method,
                                     data=json.dumps(body).encode() if body is not None else None,
                                     headers={"Authorization": f"Bearer {token or self.admin}", "Content-Type": ctype,
                                              "Accept": accept})
        try:
            with urllib.request.urlopen(req, context=self.ctx, timeout=30) as r:
                return r.status, json.load(r)
        except urllib.error.HTTPError as e:
            return e.code, json.load(e)

    def token(self, namespace, sa, pod=None, audiences=(), file=None):
        args = [sys.executable, os.path.join(HERE, "main.py"), "token", self.kube, "--namespace", namespace,
                "--service-account", sa]
        args += ["--pod", pod] if pod else []
        args += [x for a in audiences for x in ("--audience", a)]
        args += ["--file", file] if file else []
        out = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.assertEqual(out.returncode, 0, out.stderr)
        return out.stdout.strip()

    def watch_lines(self, path, token=None, timeout=10):
        req = urllib.request.Request(self.base + path, headers={"Authorization": f"Bearer {token or self.admin}"})
        with urllib.request.urlopen(req, context=self.ctx, timeout=timeout) as r:
            return [json.loads(line) for line in r if line.strip()]


class ServerTest(RunningServer, unittest.TestCase):
    def test_auth_and_rbac(self):
        self.assertEqual(self.call("GET", "/api/v1/pods", token="wrong")[0], 401)
        code, body = self.call("GET", "/api/v1/namespaces/shop/pods", token=self.agent)
        self.assertEqual(code, 200)
        code, body = self.call("DELETE", "/api/v1/namespaces/shop/pods/web", token=self.agent)
        self.assertEqual(code, 403)
        self.assertEqual(body["reason"], "Forbidden")
        self.assertIn('cannot delete resource "pods"', body["message"])
        self.assertEqual(self.call("GET", "/api/v1/namespaces/shop/secrets", token=self.agent)[0], 403)

    def test_keep_alive_after_a_refused_body(self):
        import http.client
        conn = http.client.HTTPSConnection("127.0.0.1", self.cfg["hostPort"], context=self.ctx, timeout=10)
        body = json.dumps({"metadata": {"name": "x"}})
        conn.request("POST", "/api/v1/namespaces/shop/configmaps", body,
                     {"Authorization": f"Bearer {self.agent}", "Content-Type": "application/json"})
        r = conn.getresponse()
        r.read()
        self.assertEqual(r.status, 403)
        conn.request("GET", "/version", headers={"Authorization": f"Bearer {self.agent}"})
        r = conn.getresponse()
        self.assertEqual((r.status, json.load(r)["major"]), (200, "1"))
        conn.close()

    def test_discovery(self):
        code, groups = self.call("GET", "/apis")
        names = {g["name"]: g for g in groups["groups"]}
        self.assertEqual(names["security.istio.io"]["preferredVersion"]["version"], "v1")
        self.assertEqual([v["version"] for v in names["maistra.io"]["versions"]], ["v2", "v1"])
        code, core = self.call("GET", "/api/v1")
        pods = next(r for r in core["resources"] if r["name"] == "pods")
        self.assertEqual(pods["shortNames"], ["po"])
        self.assertIn("watch", pods["verbs"])

    def test_create_patch_delete_and_endpointslices(self):
        code, pod = self.call("POST", "/api/v1/namespaces/shop/pods", {
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web2", "labels": {"app": "web"}},
            "spec": {"containers": [{"name": "app", "image": "x"}]}})
        self.assertEqual(code, 201)
        self.assertTrue(pod["metadata"]["uid"])
        self.assertEqual(pod["status"]["phase"], "Pending")  # no kubelet: an API-made pod never runs
        self.assertEqual(self.call("POST", "/api/v1/namespaces/shop/pods", pod)[0], 409)
        code, patched = self.call("PATCH", "/api/v1/namespaces/shop/pods/web2", {"metadata": {"labels": {"x": "1"}}},
                                  ctype="application/merge-patch+json")
        self.assertEqual(patched["metadata"]["labels"], {"app": "web", "x": "1"})
        self.assertGreater(int(patched["metadata"]["resourceVersion"]), int(pod["metadata"]["resourceVersion"]))
        code, slices = self.call("GET", "/apis/discovery.k8s.io/v1/namespaces/shop/endpointslices")
        eps = [e for s in slices["items"] if s["metadata"]["labels"]["kubernetes.io/service-name"] == "web"
               for e in s["endpoints"]]
        self.assertEqual([e["addresses"] for e in eps], [["10.244.1.10"]])  # web2 has no IP
        self.assertEqual(self.call("DELETE", "/api/v1/namespaces/shop/pods/web2")[0], 200)
        self.assertEqual(self.call("GET", "/api/v1/namespaces/shop/pods/web2")[0], 404)

    def test_custom_resources_merge_patch_only_and_smcp_conversion(self):
        pa = {"apiVersion": "security.istio.io/v1beta1", "kind": "PeerAuthentication",
              "metadata": {"name": "p", "namespace": "shop"}, "spec": {"mtls": {"mode": "STRICT"}}}
        self.assertEqual(self.call("POST", "/apis/security.istio.io/v1beta1/namespaces/shop/peerauthentications", pa)[0], 201)
        code, v1 = self.call("GET", "/apis/security.istio.io/v1/namespaces/shop/peerauthentications/p")
        self.assertEqual(v1["apiVersion"], "security.istio.io/v1")
        code, _ = self.call("PATCH", "/apis/security.istio.io/v1/namespaces/shop/peerauthentications/p", {},
                            ctype="application/strategic-merge-patch+json")
        self.assertEqual(code, 415)
        smcp = {"apiVersion": "maistra.io/v1", "kind": "ServiceMeshControlPlane",
                "metadata": {"name": "basic", "namespace": "shop"},
                "spec": {"istio": {"global": {"mtls": {"enabled": True}}}}}
        self.assertEqual(self.call("POST", "/apis/maistra.io/v1/namespaces/shop/servicemeshcontrolplanes", smcp)[0], 201)
        code, v2 = self.call("GET", "/apis/maistra.io/v2/namespaces/shop/servicemeshcontrolplanes/basic")
        self.assertEqual(v2["spec"], {"security": {"dataPlane": {"mtls": True}}})

    def test_pagination_with_continue(self):
        for i in range(7):
            self.call("POST", "/api/v1/namespaces/shop/configmaps", {"metadata": {"name": f"cm-{i}"}})
        names, token, rvs = [], "", set()
        while True:
            code, page = self.call("GET", f"/api/v1/namespaces/shop/configmaps?limit=3&continue={token}")
            names += [o["metadata"]["name"] for o in page["items"]]
            rvs.add(page["metadata"]["resourceVersion"])
            token = page["metadata"].get("continue")
            if not token:
                break
            self.call("POST", "/api/v1/namespaces/shop/configmaps", {"metadata": {"name": f"late-{len(names)}"}})
        self.assertEqual(names, [f"cm-{i}" for i in range(7)])  # one consistent snapshot
        self.assertEqual(len(rvs), 1)

    def test_watch_resume_bookmark_and_410(self):
        _, lst = self.call("GET", "/api/v1/namespaces/shop/services")
        rv = lst["metadata"]["resourceVersion"]
        self.call("POST", "/api/v1/namespaces/shop/services", {"metadata": {"name": "w1"},
                                                               "spec": {"ports": [{"port": 1}]}})
        self.call("POST", "/meshsim/settings", {"bookmarkIntervalSeconds": 0.5})
        events = self.watch_lines(f"/api/v1/namespaces/shop/services?watch=true&resourceVersion={rv}"
                                  "&allowWatchBookmarks=true&timeoutSeconds=2")
        types = [e["type"] for e in events]
        self.assertEqual(types[0], "ADDED")
        self.assertEqual(events[0]["object"]["metadata"]["name"], "w1")
        self.assertIn("BOOKMARK", types)
        self.call("POST", "/meshsim/compact")
        events = self.watch_lines(f"/api/v1/namespaces/shop/services?watch=true&resourceVersion={rv}")
        self.assertEqual(events[0]["type"], "ERROR")
        self.assertEqual(events[0]["object"]["code"], 410)
        self.assertEqual(events[0]["object"]["reason"], "Expired")

    def test_watch_close_after_setting(self):
        self.call("POST", "/meshsim/settings", {"watchCloseAfterSeconds": 1})
        try:
            t0 = time.monotonic()
            self.watch_lines("/api/v1/pods?watch=true&resourceVersion=0", timeout=20)
            self.assertLess(time.monotonic() - t0, 5)
        finally:
            self.call("POST", "/meshsim/settings", {"watchCloseAfterSeconds": 0})

    def test_crd_delete_and_reinstall(self):
        _, crd = self.call("GET", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/sidecars.networking.istio.io")
        self.assertEqual(self.call("DELETE", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/"
                                             "sidecars.networking.istio.io")[0], 200)
        self.assertEqual(self.call("GET", "/apis/networking.istio.io/v1/sidecars")[0], 404)
        crd["metadata"] = {"name": crd["metadata"]["name"]}
        self.assertEqual(self.call("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd)[0], 201)
        self.assertEqual(self.call("GET", "/apis/networking.istio.io/v1/sidecars")[0], 200)

    def test_python_client_list_and_watch(self):
        try:
            import kubernetes
        except ImportError:
            self.skipTest("python3-kubernetes is not installed")
        from kubernetes import client, config, watch
        api = client.CoreV1Api(config.new_client_from_config(os.path.join(self.kube, "admin.kubeconfig")))
        pods = api.list_pod_for_all_namespaces()
        self.assertIn("web", [p.metadata.name for p in pods.items])
        rv = pods.metadata.resource_version
        threading.Timer(0.5, lambda: self.call("PATCH", "/api/v1/namespaces/shop/pods/web",
                                               {"metadata": {"labels": {"seen": "yes"}}},
                                               ctype="application/merge-patch+json")).start()
        seen = None
        for ev in watch.Watch().stream(api.list_pod_for_all_namespaces, resource_version=rv, timeout_seconds=5):
            if ev["type"] == "MODIFIED":
                seen = ev["object"].metadata.labels.get("seen")
                break
        self.assertEqual(seen, "yes")
        custom = client.CustomObjectsApi(config.new_client_from_config(os.path.join(self.kube, "admin.kubeconfig")))
        out = custom.list_cluster_custom_object("security.istio.io", "v1", "peerauthentications")
        self.assertEqual(out["kind"], "PeerAuthenticationList")


    def test_subject_access_review_reads_rbac_created_through_the_api(self):
        """SubjectAccessReview as istiod asks it before serving a sidecar a Secret
        (pilot/pkg/credentials/kube/secrets.go Authorize: may the service account
        list secrets in its namespace?), through the Python client; a Role and
        RoleBinding created through the API count, as kube-apiserver's RBAC
        authorizer reads them."""
        try:
            from kubernetes import client, config
        except ImportError:
            self.skipTest("python3-kubernetes is not installed")
        api_client = config.new_client_from_config(os.path.join(self.kube, "admin.kubeconfig"))
        self.addCleanup(api_client.close)
        authz = client.AuthorizationV1Api(api_client)

        def may_list_secrets(user):
            review = client.V1SubjectAccessReview(spec=client.V1SubjectAccessReviewSpec(
                user=user, resource_attributes=client.V1ResourceAttributes(namespace="shop", verb="list",
                                                                           resource="secrets")))
            return authz.create_subject_access_review(review).status.allowed

        self.assertFalse(may_list_secrets("system:serviceaccount:shop:web"))
        rbac = client.RbacAuthorizationV1Api(api_client)
        rbac.create_namespaced_role("shop", client.V1Role(
            metadata=client.V1ObjectMeta(name="list-secrets"),
            rules=[client.V1PolicyRule(api_groups=[""], resources=["secrets"], verbs=["list"])]))
        rbac.create_namespaced_role_binding("shop", {
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": "web-lists-secrets"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "list-secrets"},
            "subjects": [{"kind": "ServiceAccount", "name": "web", "namespace": "shop"}]})
        self.assertTrue(may_list_secrets("system:serviceaccount:shop:web"))
        self.assertFalse(may_list_secrets("system:serviceaccount:shop:other"))
        # The agent may ask (deploy/daemonset/base/rbac.yaml), a pod's account may not.
        body = {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
                "spec": {"user": "system:serviceaccount:shop:web",
                         "resourceAttributes": {"namespace": "shop", "verb": "list", "resource": "secrets"}}}
        code, out = self.call("POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews", body, token=self.agent)
        self.assertEqual((code, out["status"]["allowed"]), (201, True))
        client.CoreV1Api(api_client).create_namespaced_service_account("shop", {"metadata": {"name": "web"}})
        self.assertEqual(self.call("POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews", body,
                                   token=self.token("shop", "web"))[0], 403)
        rbac.delete_namespaced_role_binding("web-lists-secrets", "shop")
        self.assertFalse(may_list_secrets("system:serviceaccount:shop:web"))


class TokenTest(RunningServer, unittest.TestCase):
    """Service-account tokens (TokenRequest, `main.py token`) and TokenReview, against
    kube-apiserver's behaviour: pkg/serviceaccount/claims.go (the pod binding is
    checked, the node comes from the claims), pkg/registry/authentication/tokenreview
    (audiences), k8s.io/apiserver bearertoken ("invalid bearer token")."""

    ISSUER = "https://kubernetes.default.svc.cluster.local"

    def review(self, token, audiences=None, caller=None):
        spec = {"token": token}
        if audiences is not None:
            spec["audiences"] = audiences
        return self.call("POST", "/apis/authentication.k8s.io/v1/tokenreviews",
                         {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": spec}, token=caller)

    def obj(self, path):
        code, body = self.call("GET", path)
        self.assertEqual(code, 200, body)
        return body

    def test_discovery(self):
        group = self.obj("/apis/authentication.k8s.io/v1")
        reviews = next(r for r in group["resources"] if r["name"] == "tokenreviews")
        self.assertEqual((reviews["kind"], reviews["namespaced"], reviews["verbs"]), ("TokenReview", False, ["create"]))
        core = self.obj("/api/v1")
        token = next(r for r in core["resources"] if r["name"] == "serviceaccounts/token")
        self.assertEqual((token["group"], token["kind"], token["verbs"]), ("authentication.k8s.io", "TokenRequest", ["create"]))
        self.assertEqual(self.call("GET", "/apis/authentication.k8s.io/v1/tokenreviews")[0], 405)

    def test_agent_pods_and_service_accounts(self):
        pods = self.obj("/api/v1/namespaces/meshlock-system/pods?labelSelector=app%3Dmeshlock-agent")["items"]
        self.assertEqual([(p["metadata"]["name"], p["spec"]["nodeName"], p["status"]["podIP"]) for p in pods],
                         [("meshlock-agent-node-a", "node-a", "172.18.0.2"), ("meshlock-agent-node-b", "node-b", "172.18.0.3")])
        for p in pods:
            self.assertEqual((p["spec"]["serviceAccountName"], p["spec"]["hostNetwork"], p["status"]["phase"]),
                             ("meshlock-agent", True, "Running"))
        names = {(a["metadata"]["namespace"], a["metadata"]["name"]) for a in self.obj("/api/v1/serviceaccounts")["items"]}
        self.assertLessEqual({("meshlock-system", "meshlock-agent"), ("meshlock-system", "meshlock-ca"), ("shop", "default")}, names)
        # System objects: not in the manifest mirror that manifest-mode agents read.
        mirror = os.path.join(self.dir, "manifests", "pod.yaml")
        for _ in range(50):
            if os.path.exists(mirror):
                break
            time.sleep(0.1)
        with open(mirror) as f:
            self.assertNotIn("meshlock-agent", f.read())

    def test_token_review_needs_rbac(self):
        token = self.token("meshlock-system", "meshlock-agent", pod="meshlock-agent-node-a", audiences=["istio-ca"])
        code, body = self.review(token, ["istio-ca"], caller=self.agent)
        self.assertEqual(code, 403)
        self.assertIn('User "system:serviceaccount:meshlock-system:meshlock-agent" cannot create resource "tokenreviews" '
                      'in API group "authentication.k8s.io" at the cluster scope', body["message"])
        ca = self.token("meshlock-system", "meshlock-ca")  # the API's audience: a kubeconfig token
        code, body = self.review(token, ["istio-ca"], caller=ca)
        self.assertEqual(code, 201, body)
        self.assertTrue(body["status"]["authenticated"])
        self.assertEqual(self.call("GET", "/api/v1/namespaces/shop/pods", token=ca)[0], 200)
        self.assertEqual(self.call("DELETE", "/api/v1/namespaces/shop/pods/web", token=ca)[0], 403)

    def test_bound_token_names_pod_and_node(self):
        token = self.token("meshlock-system", "meshlock-agent", pod="meshlock-agent-node-a", audiences=["istio-ca"])
        code, body = self.review(token, ["istio-ca"])
        self.assertEqual(code, 201, body)
        self.assertEqual((body["kind"], body["apiVersion"], body["spec"]["token"]),
                         ("TokenReview", "authentication.k8s.io/v1", token))
        status = body["status"]
        pod = self.obj("/api/v1/namespaces/meshlock-system/pods/meshlock-agent-node-a")
        node = self.obj("/api/v1/nodes/node-a")
        sa = self.obj("/api/v1/namespaces/meshlock-system/serviceaccounts/meshlock-agent")
        self.assertTrue(status["authenticated"])
        self.assertEqual(status["audiences"], ["istio-ca"])
        user = status["user"]
        self.assertEqual(user["username"], "system:serviceaccount:meshlock-system:meshlock-agent")
        self.assertEqual(user["uid"], sa["metadata"]["uid"])
        self.assertEqual(user["groups"], ["system:serviceaccounts", "system:serviceaccounts:meshlock-system",
                                          "system:authenticated"])
        extra = user["extra"]
        self.assertEqual(extra["authentication.kubernetes.io/pod-name"], ["meshlock-agent-node-a"])
        self.assertEqual(extra["authentication.kubernetes.io/pod-uid"], [pod["metadata"]["uid"]])
        self.assertEqual(extra["authentication.kubernetes.io/node-name"], ["node-a"])
        self.assertEqual(extra["authentication.kubernetes.io/node-uid"], [node["metadata"]["uid"]])
        self.assertTrue(extra["authentication.kubernetes.io/credential-id"][0].startswith("JTI="))
        # A JWT as the kubelet's projected tokens are: the claims say the same.
        import base64
        claims = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
        self.assertEqual((claims["iss"], claims["aud"], claims["sub"]),
                         (self.ISSUER, ["istio-ca"], "system:serviceaccount:meshlock-system:meshlock-agent"))
        self.assertEqual(claims["kubernetes.io"]["pod"], {"name": "meshlock-agent-node-a", "uid": pod["metadata"]["uid"]})
        try:
            import jwt  # Debian's python3-jwt: an independent check of the ES256 signature
        except ImportError:
            return
        from cryptography.hazmat.primitives import serialization
        with open(os.path.join(self.kube, "pki", "sa.key"), "rb") as f:
            public = serialization.load_pem_private_key(f.read(), None).public_key()
        self.assertEqual(jwt.decode(token, public, algorithms=["ES256"], audience="istio-ca")["sub"], claims["sub"])

    def test_wrong_audience_and_unknown_token(self):
        token = self.token("meshlock-system", "meshlock-agent", pod="meshlock-agent-node-b", audiences=["istio-ca"])
        code, body = self.review(token, ["other"])
        self.assertEqual(code, 201)
        self.assertNotIn("authenticated", body["status"])  # omitempty: false is left out
        self.assertEqual(body["status"]["user"], {})
        self.assertEqual(body["status"]["error"],
                         'token audiences ["istio-ca"] is invalid for the target audiences ["other"]')
        code, body = self.review(token)  # no spec.audiences: the API server's own
        self.assertIn(f'for the target audiences ["{self.ISSUER}"]', body["status"]["error"])
        code, body = self.review(token, ["other", "istio-ca"])
        self.assertEqual(body["status"]["audiences"], ["istio-ca"])
        code, body = self.review("not-a-token", ["istio-ca"])
        self.assertEqual((code, body["status"]), (201, {"user": {}, "error": "invalid bearer token"}))
        code, body = self.review(token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB"), ["istio-ca"])
        self.assertNotIn("authenticated", body["status"])
        # A static token (tokens.csv) is valid for the API's audience only (audagnostic.go).
        code, body = self.review(self.agent, ["istio-ca"])
        self.assertEqual(body["status"].get("error"), "invalid bearer token")
        code, body = self.review(self.agent)
        self.assertEqual((body["status"]["authenticated"], body["status"]["audiences"]), (True, [self.ISSUER]))
        self.assertNotIn("extra", body["status"]["user"])
        self.assertEqual(self.review("")[0], 400)

    def test_token_of_a_deleted_or_moved_pod(self):
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "mover", "namespace": "shop"},
               "spec": {"nodeName": "node-a", "containers": [{"name": "app", "image": "x"}]}}
        self.assertEqual(self.call("POST", "/api/v1/namespaces/shop/pods", pod)[0], 201)
        token = self.token("shop", "default", pod="mover", audiences=["istio-ca"])
        self.assertTrue(self.review(token, ["istio-ca"])[1]["status"]["authenticated"])
        self.assertEqual(self.call("DELETE", "/api/v1/namespaces/shop/pods/mover")[0], 200)
        status = self.review(token, ["istio-ca"])[1]["status"]
        self.assertEqual(status, {"user": {}, "error": "service account token has been invalidated"})
        # The same name again, on another node: the old token names the old uid.
        pod["spec"]["nodeName"] = "node-b"
        code, moved = self.call("POST", "/api/v1/namespaces/shop/pods", pod)
        self.assertEqual(code, 201)
        status = self.review(token, ["istio-ca"])[1]["status"]
        self.assertRegex(status["error"], r"^pod UID \(%s\) does not match service account pod ref claim \(.+\)$"
                         % moved["metadata"]["uid"])
        status = self.review(self.token("shop", "default", pod="mover", audiences=["istio-ca"]), ["istio-ca"])[1]["status"]
        self.assertEqual(status["user"]["extra"]["authentication.kubernetes.io/node-name"], ["node-b"])
        self.call("DELETE", "/api/v1/namespaces/shop/pods/mover")

    def test_token_request_errors(self):
        path = "/api/v1/namespaces/meshlock-system/serviceaccounts/meshlock-ca/token"
        bound = {"spec": {"boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": "meshlock-agent-node-a"}}}
        code, body = self.call("POST", path, bound)
        self.assertEqual(code, 400)
        self.assertIn('cannot bind token for serviceaccount "meshlock-ca" to pod running with different serviceaccount', body["message"])
        self.assertEqual(self.call("POST", "/api/v1/namespaces/shop/serviceaccounts/nobody/token", {})[0], 404)
        code, body = self.call("POST", path, {"spec": {"expirationSeconds": 60}})
        self.assertEqual(code, 422)
        self.assertIn("may not specify a duration less than 10 minutes", body["message"])
        agent_path = "/api/v1/namespaces/meshlock-system/serviceaccounts/meshlock-agent/token"
        bound["spec"]["boundObjectRef"]["uid"] = "not-the-uid"
        self.assertEqual(self.call("POST", agent_path, bound)[0], 409)
        self.assertEqual(self.call("POST", path, {}, token=self.agent)[0], 403)
        code, body = self.call("POST", path, {"spec": {"audiences": ["a"], "expirationSeconds": None}})  # kubectl's
        self.assertEqual((code, body["kind"], body["spec"]["audiences"]), (201, "TokenRequest", ["a"]))
        self.assertEqual(body["spec"]["expirationSeconds"], 3600)
        self.assertTrue(body["status"]["expirationTimestamp"].endswith("Z"))

    def test_bound_token_as_api_credential(self):
        api_token = self.token("meshlock-system", "meshlock-agent", pod="meshlock-agent-node-a")
        self.assertEqual(self.call("GET", "/api/v1/namespaces/shop/pods", token=api_token)[0], 200)  # rbac.yaml
        code, body = self.call("DELETE", "/api/v1/namespaces/shop/pods/web", token=api_token)
        self.assertEqual(code, 403)
        ca_only = self.token("meshlock-system", "meshlock-agent", pod="meshlock-agent-node-a", audiences=["istio-ca"])
        self.assertEqual(self.call("GET", "/api/v1/namespaces/shop/pods", token=ca_only)[0], 401)

    def test_python_client_creates_a_token_review(self):
        try:
            from kubernetes import client, config
        except ImportError:
            self.skipTest("python3-kubernetes is not installed")
        token = self.token("meshlock-system", "meshlock-agent", pod="meshlock-agent-node-b", audiences=["istio-ca"])
        api_client = config.new_client_from_config(os.path.join(self.kube, "admin.kubeconfig"))
        self.addCleanup(api_client.close)
        out = client.AuthenticationV1Api(api_client).create_token_review(
            client.V1TokenReview(spec=client.V1TokenReviewSpec(token=token, audiences=["istio-ca"])))
        self.assertTrue(out.status.authenticated)
        self.assertEqual(out.status.user.username, "system:serviceaccount:meshlock-system:meshlock-agent")
        self.assertEqual(out.status.user.extra["authentication.kubernetes.io/node-name"], ["node-b"])
        self.assertEqual(out.status.audiences, ["istio-ca"])

    def test_token_file_and_restart(self):
        path = os.path.join(self.dir, "agent-token")
        self.assertEqual(self.token("meshlock-system", "meshlock-agent", pod="meshlock-agent-node-a",
                                    audiences=["istio-ca"], file=path), path)
        self.assertEqual(os.stat(path).st_mode & 0o777, 0o600)
        with open(path) as f:
            token = f.read()
        main = os.path.join(HERE, "main.py")
        subprocess.run([sys.executable, main, "stop", self.kube], check=True, stdout=subprocess.DEVNULL)
        subprocess.run([sys.executable, main, "start", self.kube], check=True, stdout=subprocess.DEVNULL)
        status = self.review(token, ["istio-ca"])[1]["status"]
        self.assertTrue(status.get("authenticated"), status)
        self.assertEqual(status["user"]["extra"]["authentication.kubernetes.io/node-name"], ["node-a"])


if __name__ == "__main__":
    unittest.main()
