#!/usr/bin/env python3
"""Kiali's namespace graph and security badge for TCP traffic, rebuilt from
kiali/kiali's sources so a test can ask a real Prometheus what Kiali would draw.

What is reproduced, and from where (kiali/kiali, master):
- graph/telemetry/istio/istio.go, buildNamespaceTrafficMap: the three TCP
  queries per byte metric (0: unserviced incoming, source reporter;
  1: incoming, destination reporter; 2: outgoing, source reporter), grouped by
  the same labels, `> 0` (idle edges off);
- populateTrafficMap: the required labels, HandleClusters,
  IsBadSourceTelemetry, HandleDestination, IsBadDestTelemetry
  (graph/telemetry/istio/util/util.go), service-node injection, and addTraffic's
  de-duplication of source- and destination-reported series (edgeTSHash);
- graph/types.go, Id: node ids of a workload graph;
- graph/telemetry/istio/appender/security_policy.go: the two
  connection_security_policy queries (destination reporter) and
  applySecurityPolicy's mTLS percentage per edge.
Only the TCP rates (Kiali's "total": sent and received bytes) of a workload
graph with injected service nodes are built: that is what meshlock exports.

`scope` adds one matcher (e.g. job="x") to every query: Kiali has no such
parameter; the test uses it to look at one scrape job at a time.

Usage: kiali_graph.py PROMETHEUS_URL NAMESPACE DURATION_S [SCOPE] -> JSON
  {"edges": [{"source", "dest", "tcp", "isMTLS"}], "skipped": {reason: n}}
"""
import json
import re
import sys
import urllib.parse
import urllib.request

UNKNOWN = "unknown"
PASSTHROUGH = "PassthroughCluster"
BAD_SERVICE = re.compile(r"^\d+\.\d+\.\d+\.\d+(:\d+)?$")

TCP_GROUP_BY = ("app,source_cluster,source_workload_namespace,source_workload,source_canonical_service,"
                "source_canonical_revision,destination_cluster,destination_service_namespace,destination_service,"
                "destination_service_name,destination_workload_namespace,destination_workload,"
                "destination_canonical_service,destination_canonical_revision,response_flags")
SECURITY_GROUP_BY = ("source_cluster,source_workload_namespace,source_workload,source_canonical_service,"
                     "source_canonical_revision,source_principal,destination_cluster,destination_service_namespace,"
                     "destination_service_name,destination_workload_namespace,destination_workload,"
                     "destination_canonical_service,destination_canonical_revision,destination_principal,"
                     "connection_security_policy")


def is_ok(name):  # graph.IsOK
    return name != "" and name != UNKNOWN


def node_id(cluster, svc_ns, svc, wl_ns, wl, app, ver):
    """graph.Id for GraphTypeWorkload."""
    ns = wl_ns if is_ok(wl_ns) else svc_ns
    if ns == UNKNOWN and wl == UNKNOWN and app == UNKNOWN and svc == "":
        return f"{cluster}_unknown_source", "unknown"
    if wl == UNKNOWN and app == UNKNOWN and svc == UNKNOWN:
        return f"svc_{cluster}_{ns}_unknown", "service"
    if not is_ok(wl) and not is_ok(app) and not is_ok(svc):
        raise ValueError(f"failed ID gen1: cluster=[{cluster}] namespace=[{ns}]")
    if not is_ok(wl):
        return (f"svc_{cluster}_{ns}_{svc}" if is_ok(svc) else f"svc_{cluster}_{ns}_unknown"), "service"
    return f"wl_{cluster}_{ns}_{wl}", "workload"


def is_bad_source(cluster, cluster_ok, ns, wl, app):  # util.IsBadSourceTelemetry
    if is_ok(ns) and not is_ok(wl) and not is_ok(app):
        return "bad source telemetry (case 1: no workload, no app)"
    if is_ok(ns) and cluster_ok and not is_ok(cluster):
        return "bad source telemetry (case 2: source_cluster unknown)"
    return None


def is_bad_dest(cluster, cluster_ok, svc_ns, svc, svc_name, wl):  # util.IsBadDestTelemetry
    if not is_ok(wl) and is_ok(svc) and is_ok(svc_name) and svc == svc_name and BAD_SERVICE.match(svc_name):
        return "bad dest telemetry (case 1: IP service)"
    if is_ok(svc_ns) and cluster_ok and not is_ok(cluster):
        return "bad dest telemetry (case 2: destination_cluster unknown)"
    return None


def edge_hops(m, src_cluster, dst_cluster):
    """The graph edges one series adds: source -> destination, or source ->
    injected service node -> destination (addTraffic and the security
    appender inject the same way)."""
    src, _ = node_id(src_cluster, m["source_workload_namespace"], "", m["source_workload_namespace"],
                     m["source_workload"], m["source_canonical_service"], m["source_canonical_revision"])
    dst, dst_type = node_id(dst_cluster, m["destination_service_namespace"], m["destination_service_name"],
                            m["destination_workload_namespace"], m["destination_workload"],
                            m["destination_canonical_service"], m["destination_canonical_revision"])
    svc_name = m["destination_service_name"]
    if is_ok(svc_name) and svc_name != PASSTHROUGH and dst_type != "service":
        svc, _ = node_id(dst_cluster, m["destination_service_namespace"], svc_name, "", "", "", "")
        return [(src, svc), (svc, dst)]
    return [(src, dst)]


class Prometheus:
    def __init__(self, url):
        self.url = url.rstrip("/")

    def query(self, promql):
        data = urllib.parse.urlencode({"query": promql}).encode()
        with urllib.request.urlopen(self.url + "/api/v1/query", data, timeout=10) as r:
            body = json.load(r)
        if body.get("status") != "success":
            raise RuntimeError(f"query failed: {promql}: {body}")
        return body["data"]["result"]


def traffic_queries(ns, duration, scope):
    s = f"{scope}," if scope else ""
    queries = []
    for metric in ("istio_tcp_received_bytes_total", "istio_tcp_sent_bytes_total"):
        queries.append((metric, f'sum(rate({metric}{{{s}reporter="source",source_workload_namespace!="{ns}",'
                                f'destination_workload_namespace="unknown",destination_workload="unknown",'
                                f'destination_service=~"^.+\\\\.{ns}\\\\..+$"}} [{duration}s])) by ({TCP_GROUP_BY}) > 0'))
        queries.append((metric, f'sum(rate({metric}{{{s}reporter="destination",destination_workload_namespace="{ns}"}} '
                                f'[{duration}s])) by ({TCP_GROUP_BY}) > 0'))
        queries.append((metric, f'sum(rate({metric}{{{s}reporter="source",source_workload_namespace="{ns}"}} '
                                f'[{duration}s])) by ({TCP_GROUP_BY}) > 0'))
    return queries


def security_queries(ns, duration, scope):
    s = f"{scope}," if scope else ""
    out_q = " OR ".join(
        f'(sum(rate({m}{{{s}reporter="destination",source_workload_namespace!="{ns}",destination_service_namespace="{ns}"}}'
        f'[{duration}s])) by ({SECURITY_GROUP_BY}) > 0)'
        for m in ("istio_tcp_sent_bytes_total", "istio_tcp_received_bytes_total"))
    in_q = " OR ".join(
        f'(sum(rate({m}{{{s}reporter="destination",source_workload_namespace="{ns}"}}[{duration}s])) '
        f'by ({SECURITY_GROUP_BY}) > 0)'
        for m in ("istio_tcp_sent_bytes_total", "istio_tcp_received_bytes_total"))
    return [out_q, in_q]


REQUIRED = ("source_workload_namespace", "source_workload", "source_canonical_service", "source_canonical_revision",
            "destination_service_namespace", "destination_service", "destination_service_name",
            "destination_workload_namespace", "destination_workload", "destination_canonical_service",
            "destination_canonical_revision")


def build(prom, ns, duration, scope=None):
    edges = {}      # (source id, dest id) -> tcp rate
    applied = set()  # edgeTSHash
    skipped = {}

    def skip(reason):
        skipped[reason] = skipped.get(reason, 0) + 1

    for metric, q in traffic_queries(ns, duration, scope):
        for sample in prom.query(q):
            m = sample["metric"]
            val = float(sample["value"][1])
            if any(k not in m for k in REQUIRED) or "response_flags" not in m:
                skip("missing expected TS labels")
                continue
            src_cluster = m.get("source_cluster", UNKNOWN)
            dst_cluster = m.get("destination_cluster", UNKNOWN)
            reason = is_bad_source(src_cluster, "source_cluster" in m, m["source_workload_namespace"],
                                   m["source_workload"], m["source_canonical_service"])
            if reason:
                skip(reason)
                continue
            # HandleDestination (istio#29373): an unknown destination cluster is taken to be the source's.
            if not is_ok(dst_cluster) and is_ok(src_cluster) and is_ok(m["destination_service_namespace"]):
                dst_cluster = src_cluster
            reason = is_bad_dest(dst_cluster, "destination_cluster" in m, m["destination_service_namespace"],
                                 m["destination_service"], m["destination_service_name"], m["destination_workload"])
            if reason:
                skip(reason)
                continue
            hops = edge_hops(m, src_cluster, dst_cluster)
            ts_hash = (metric, hops[0][0], hops[-1][1], m["response_flags"], m["destination_service"])
            if ts_hash in applied:
                continue
            applied.add(ts_hash)
            for hop in hops:
                edges[hop] = edges.get(hop, 0.0) + val

    policy = {}  # (source id, dest id) -> {csp: rate}
    for q in security_queries(ns, duration, scope):
        for sample in prom.query(q):
            m = sample["metric"]
            if any(k not in m for k in REQUIRED if k != "destination_service") or \
                    "source_principal" not in m or "destination_principal" not in m:
                continue
            csp = m.get("connection_security_policy", UNKNOWN)
            val = float(sample["value"][1])
            src_cluster = m.get("source_cluster", UNKNOWN)
            dst_cluster = m.get("destination_cluster", UNKNOWN)
            hops = edge_hops(m, src_cluster, dst_cluster)
            for hop in hops:
                rates = policy.setdefault(hop, {})
                rates[csp] = rates.get(csp, 0.0) + val

    out = []
    for (src, dst), rate in sorted(edges.items()):
        edge = {"source": src, "dest": dst, "tcp": rate}
        rates = policy.get((src, dst), {})
        mtls = rates.get("mutual_tls", 0.0)
        other = sum(v for k, v in rates.items() if k != "mutual_tls")
        if mtls > 0:
            edge["isMTLS"] = mtls / (mtls + other) * 100
        out.append(edge)
    return {"edges": out, "skipped": skipped}


def main():
    if len(sys.argv) not in (4, 5):
        sys.exit(__doc__)
    prom = Prometheus(sys.argv[1])
    scope = sys.argv[4] if len(sys.argv) == 5 else None
    print(json.dumps(build(prom, sys.argv[2], int(sys.argv[3]), scope), indent=2))


if __name__ == "__main__":
    main()
