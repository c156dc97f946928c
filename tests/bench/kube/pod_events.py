#!/usr/bin/python3
"""Watch events for the Kubernetes-source benchmark: merge-patches a label on
the synthetic pods of meshsim's API server (controllers.synthetic_cluster:
synth-<i % 10>/pod-<i>), one pod per request, as fast as the server answers
or at --rate per second, and prints how many it sent and how fast.

  /usr/bin/python3 tests/bench/kube/pod_events.py KUBE_DIR [--events 1000] [--rate 0] [--pods 10000]
  [--field label|status]

`label` changes what the agent reads (a pod label); `status` changes only a
pod condition's timestamp, which the agent does not read (a real cluster's
most common pod update)."""
import argparse
import http.client
import json
import os
import ssl
import sys
import time


def main():
    p = argparse.ArgumentParser()
    p.add_argument("kube")
    p.add_argument("--events", type=int, default=1000)
    p.add_argument("--rate", type=float, default=0, help="patches per second (0: as fast as answered)")
    p.add_argument("--pods", type=int, default=10000)
    p.add_argument("--field", choices=["label", "status"], default="label")
    a = p.parse_args()
    cfg = json.load(open(os.path.join(a.kube, "config.json")))
    token = open(cfg["tokenFile"]).readline().split(",")[0]
    ctx = ssl.create_default_context(cafile=cfg["caFile"])
    conn = http.client.HTTPSConnection("127.0.0.1", cfg["hostPort"], context=ctx, timeout=30)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/merge-patch+json"}
    run = int(time.time())  # a value of its own, so a second run is not a no-op write
    t0 = time.monotonic()
    for n in range(a.events):
        i = n % a.pods
        if a.field == "label":
            body = {"metadata": {"labels": {"bench-rev": f"{run}-{n}"}}}
            path = f"/api/v1/namespaces/synth-{i % 10}/pods/pod-{i}"
        else:
            body = {"status": {"conditions": [{"type": "Ready", "status": "True",
                                               "lastProbeTime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(run + n))}]}}
            path = f"/api/v1/namespaces/synth-{i % 10}/pods/pod-{i}/status"
        conn.request("PATCH", path, body=json.dumps(body), headers=headers)
        r = conn.getresponse()
        r.read()
        if r.status != 200:
            print(f"pod_events: PATCH {path}: HTTP {r.status}", file=sys.stderr)
            return 1
        if a.rate > 0:
            delay = t0 + (n + 1) / a.rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
    dt = time.monotonic() - t0
    print(f"pod_events: {a.events} {a.field} patches in {dt:.2f} s ({a.events / dt:.0f}/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
