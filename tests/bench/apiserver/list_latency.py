#!/usr/bin/python3
"""How fast meshsim's API server serves a synthetic cluster (issue 12's benchmark
cluster: 10,000 pods, 1,000 services, 1,000 PeerAuthentications), rootless, on
127.0.0.1 with no network namespaces:

  /usr/bin/python3 tests/bench/apiserver/list_latency.py [--pods N] [--kubectl PATH]

Prints the load time, full-list and paginated-list latencies (median of --runs),
kubectl's paginated `get pods -A`, the time for 1,000 watch events to reach a
watcher, and the server's RSS. Everything it starts is stopped on exit."""
import argparse
import json
import os
import shutil
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
MAIN = os.path.join(ROOT, "tests", "sim", "apiserver", "main.py")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--pods", type=int, default=10000)
    p.add_argument("--services", type=int, default=1000)
    p.add_argument("--policies", type=int, default=1000)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--kubectl", default=os.path.join(ROOT, "build", "tools", "kubernetes-client", "usr", "bin", "kubectl"))
    a = p.parse_args()
    tmp = tempfile.mkdtemp(prefix="msim-api-bench-")
    kube = os.path.join(tmp, "kube")
    try:
        subprocess.run([sys.executable, MAIN, "init", kube, "--run", "bench", "--crds",
                        os.path.join(ROOT, "tests", "sim", "apiserver", "crds.yaml")], check=True, stdout=subprocess.DEVNULL)
        subprocess.run([sys.executable, MAIN, "start", kube], check=True, stdout=subprocess.DEVNULL)
        cfg = json.load(open(os.path.join(kube, "config.json")))
        token = open(cfg["tokenFile"]).readline().split(",")[0]
        base = f"https://127.0.0.1:{cfg['hostPort']}"
        ctx = ssl.create_default_context(cafile=cfg["caFile"])

        def call(method, path, body=None, timeout=600, ctype="application/json"):
            req = urllib.request.Request(base + path, method=method, headers={"Authorization": f"Bearer {token}",
                                                                               "Content-Type": ctype},
                                         data=json.dumps(body).encode() if body is not None else None)
            with urllib.request.urlopen(req, context=ctx, timeout=timeout) as r:
                return r.read()

        t0 = time.monotonic()
        out = json.loads(call("POST", "/meshsim/synthetic", {"pods": a.pods, "services": a.services,
                                                             "policies": a.policies}))
        print(f"load {a.pods} pods, {a.services} services, {a.policies} policies: {time.monotonic() - t0:.2f} s "
              f"(server side {out['seconds']} s)")

        def timed(fn):
            samples = []
            for _ in range(a.runs):
                t = time.monotonic()
                fn()
                samples.append((time.monotonic() - t) * 1000)
            return statistics.median(samples)

        size = len(call("GET", "/api/v1/pods"))
        print(f"GET /api/v1/pods (all {a.pods}, {size / 1e6:.1f} MB): median {timed(lambda: call('GET', '/api/v1/pods')):.0f} ms")

        def paged():
            cont = ""
            while True:
                page = json.loads(call("GET", f"/api/v1/pods?limit=500&continue={cont}"))
                cont = page["metadata"].get("continue")
                if not cont:
                    return
        print(f"GET /api/v1/pods?limit=500, every page: median {timed(paged):.0f} ms")
        print(f"GET one page of 500: median {timed(lambda: call('GET', '/api/v1/pods?limit=500')):.0f} ms")
        print(f"GET peerauthentications (all {a.policies}): median "
              f"{timed(lambda: call('GET', '/apis/security.istio.io/v1/peerauthentications')):.0f} ms")
        print(f"GET endpointslices (all): median "
              f"{timed(lambda: call('GET', '/apis/discovery.k8s.io/v1/endpointslices')):.0f} ms")
        if os.path.exists(a.kubectl):
            home = os.path.join(tmp, "home")
            os.makedirs(home)
            env = dict(os.environ, HOME=home)
            cmd = [a.kubectl, "--kubeconfig", os.path.join(kube, "admin.kubeconfig"), "--cache-dir",
                   os.path.join(tmp, "cache"), "get", "pods", "-A", "--chunk-size=500", "--no-headers"]
            subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, check=True)  # warm discovery cache
            print(f"kubectl get pods -A --chunk-size=500 (table): median "
                  f"{timed(lambda: subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, check=True)):.0f} ms")

        # 1,000 label changes on one pod, observed by a watcher.
        rv = json.loads(call("GET", "/api/v1/pods?limit=1"))["metadata"]["resourceVersion"]
        got = []

        def watcher():
            req = urllib.request.Request(base + f"/api/v1/pods?watch=1&resourceVersion={rv}&timeoutSeconds=120",
                                         headers={"Authorization": f"Bearer {token}"})
            with urllib.request.urlopen(req, context=ctx, timeout=130) as r:
                for line in r:
                    got.append(line)
                    if len(got) >= 1000:
                        return
        th = threading.Thread(target=watcher)
        th.start()
        t = time.monotonic()
        for i in range(1000):
            call("PATCH", "/api/v1/namespaces/synth-0/pods/pod-0", {"metadata": {"labels": {"n": str(i)}}},
                 ctype="application/merge-patch+json")
        th.join(130)
        print(f"1000 merge patches, all 1000 watch events received: {time.monotonic() - t:.2f} s")
        pid = json.load(open(os.path.join(kube, "apiserver.json")))["pid"]
        rss = next(int(line.split()[1]) for line in open(f"/proc/{pid}/status") if line.startswith("VmRSS"))
        print(f"server RSS: {rss / 1024:.0f} MiB")
    finally:
        subprocess.run([sys.executable, MAIN, "stop", kube], stdout=subprocess.DEVNULL)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
