#!/usr/bin/python3
"""Unit tests of meshsim's API server (rootless): store, selectors, patches,
pagination, watch resume/410/bookmarks, RBAC, and the Python client
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


class ServerTest(unittest.TestCase):
    """A real server process (main.py serve) on 127.0.0.1, no netns."""

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
                    "spec: {clusterIP: 10.96.10.10, selector: {app: web}, ports: [{port: 80, targetPort: 8080}]}\n")
        cls.kube = os.path.join(cls.dir, "kube")
        main = os.path.join(HERE, "main.py")
        subprocess.run([sys.executable, main, "init", cls.kube, "--run", "unit", "--host-port", str(free_port()),
                        "--rbac", RBAC, "--crds", os.path.join(HERE, "crds.yaml"), "--seed", seed,
                        "--manifest-dir", os.path.join(cls.dir, "manifests")], check=True, stdout=subprocess.DEVNULL)
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

    def watch_lines(self, path, token=None, timeout=10):
        req = urllib.request.Request(self.base + path, headers={"Authorization": f"Bearer {token or self.admin}"})
        with urllib.request.urlopen(req, context=self.ctx, timeout=timeout) as r:
            return [json.loads(line) for line in r if line.strip()]

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


if __name__ == "__main__":
    unittest.main()
