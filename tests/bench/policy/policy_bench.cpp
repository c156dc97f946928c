// Policy at scale: 2,000 pods, 500 services, 300 policies (100
// PeerAuthentications, 200 DestinationRules). Target: every decision a node
// needs, index build included, in < 100 ms.
#include <benchmark/benchmark.h>

#include <string>

#include "config/manifest.h"
#include "policy/policy.h"

namespace meshlock::policy {
namespace {

constexpr int kNamespaces = 50;
constexpr int kPodsPerNamespace = 40;      // 2,000 pods
constexpr int kServicesPerNamespace = 10;  // 500 services, 4 pods each
constexpr int kNodes = 20;                 // 100 pods per node

config::ObjectMeta meta(std::string kind, std::string ns, std::string name, int age = 0) {
  config::ObjectMeta m;
  m.ref = {std::move(kind), std::move(ns), std::move(name)};
  m.creation_timestamp = "2024-01-01T00:00:" + std::to_string(10 + age % 50) + "Z";
  return m;
}

config::ClusterState makeCluster() {
  config::ClusterState st;
  config::ControlPlane istio;
  istio.meta = meta("Istio", "", "default");
  istio.control_namespace = "istio-system";
  st.control_planes.push_back(istio);
  st.namespaces.push_back({meta("Namespace", "", "istio-system")});
  int pod_n = 0;
  for (int n = 0; n < kNamespaces; ++n) {
    std::string ns = "ns" + std::to_string(n);
    config::Namespace nsobj{meta("Namespace", "", ns)};
    if (n % 5 != 4) nsobj.meta.labels["meshlock.io/mtls"] = "enabled";  // 80% enrolled
    st.namespaces.push_back(nsobj);
    for (int p = 0; p < kPodsPerNamespace; ++p, ++pod_n) {
      config::Pod pod;
      pod.meta = meta("Pod", ns, "pod" + std::to_string(p));
      pod.meta.labels = {{"app", "svc" + std::to_string(p % kServicesPerNamespace)}, {"pod", std::to_string(p)}};
      pod.uid = config::PodUid("uid-" + std::to_string(pod_n));
      pod.service_account = "sa" + std::to_string(p % kServicesPerNamespace);
      pod.node_name = "node" + std::to_string(pod_n % kNodes);
      pod.ip = config::IpAddress::v4(0x0af40000u + static_cast<uint32_t>(pod_n));
      pod.ips = {*pod.ip};
      pod.ports = {{"http", 8080, "TCP"}, {"metrics", 9090, "TCP"}};
      st.pods.push_back(std::move(pod));
    }
    for (int s = 0; s < kServicesPerNamespace; ++s) {
      config::Service svc;
      svc.meta = meta("Service", ns, "svc" + std::to_string(s));
      svc.cluster_ip = config::IpAddress::v4(0x0a600000u + static_cast<uint32_t>(n * 100 + s));
      svc.cluster_ips = {*svc.cluster_ip};
      svc.selector = config::Labels{{"app", "svc" + std::to_string(s)}};
      svc.ports = {{"http", 80, {0, "http"}, "TCP"}, {"metrics", 9090, {9090, ""}, "TCP"}};
      st.services.push_back(std::move(svc));
    }
  }
  // 100 PeerAuthentications: a mesh-wide one, 49 namespace-wide, 50 workload ones with port levels.
  for (int i = 0; i < 100; ++i) {
    config::PeerAuthentication pa;
    if (i == 0) {
      pa.meta = meta("PeerAuthentication", "istio-system", "default");
      pa.mode = config::PeerMode::kPermissive;
    } else if (i < 50) {
      pa.meta = meta("PeerAuthentication", "ns" + std::to_string(i), "default", i);
      pa.mode = i % 3 == 0 ? config::PeerMode::kPermissive : config::PeerMode::kStrict;
    } else {
      int n = i - 50;
      pa.meta = meta("PeerAuthentication", "ns" + std::to_string(n), "svc" + std::to_string(n % 10), i);
      pa.selector = config::Labels{{"app", "svc" + std::to_string(n % 10)}};
      pa.mode = config::PeerMode::kUnset;
      pa.port_level[9090] = config::PeerMode::kPermissive;
    }
    st.peer_authentications.push_back(std::move(pa));
  }
  // 200 DestinationRules: per-namespace wildcards, exact hosts, port levels, root rules.
  for (int i = 0; i < 200; ++i) {
    config::DestinationRule dr;
    int n = i % kNamespaces;
    std::string ns = "ns" + std::to_string(n);
    if (i < 3) {
      dr.meta = meta("DestinationRule", "istio-system", "root" + std::to_string(i));
      dr.host = i == 0 ? "*.local" : "svc" + std::to_string(i) + ".ns" + std::to_string(i) + ".svc.cluster.local";
      dr.tls = config::ClientTlsSettings{.mode = i == 0 ? config::TlsMode::kIstioMutual : config::TlsMode::kDisable};
    } else if (i < 50) {
      dr.meta = meta("DestinationRule", ns, "ns-wide");
      dr.host = "*." + ns + ".svc.cluster.local";
      dr.tls = config::ClientTlsSettings{.mode = config::TlsMode::kIstioMutual};
    } else {
      int target = (i * 7) % kNamespaces;
      dr.meta = meta("DestinationRule", ns, "dr" + std::to_string(i));
      dr.host = "svc" + std::to_string(i % 10) + ".ns" + std::to_string(target) + ".svc.cluster.local";
      dr.tls = config::ClientTlsSettings{.mode = config::TlsMode::kIstioMutual};
      if (i % 4 == 0) dr.export_to = {"."};
      dr.port_level.push_back({9090, config::ClientTlsSettings{.mode = config::TlsMode::kDisable}});
    }
    st.destination_rules.push_back(std::move(dr));
  }
  return st;
}

// Issue 12's benchmark cluster, as meshsim's synthetic one (controllers.py
// synthetic_cluster): 10,000 pods in 10 enrolled namespaces on another node,
// 1,000 services (one app each, 10 pods), 1,000 workload PeerAuthentications.
config::ClusterState makeLargeCluster() {
  config::ClusterState st;
  constexpr int kNs = 10, kPods = 10'000, kServices = 1'000;
  for (int n = 0; n < kNs; ++n) {
    config::Namespace ns{meta("Namespace", "", "synth-" + std::to_string(n))};
    ns.meta.labels["meshlock.io/mtls"] = "enabled";
    st.namespaces.push_back(ns);
  }
  for (int i = 0; i < kPods; ++i) {
    config::Pod pod;
    const std::string app = "app-" + std::to_string((i / kNs) % kServices);
    pod.meta = meta("Pod", "synth-" + std::to_string(i % kNs), "pod-" + std::to_string(i));
    pod.meta.labels = {{"app", app}};
    pod.uid = config::PodUid("uid-" + std::to_string(i));
    pod.service_account = app;
    pod.node_name = "synthetic-node";
    pod.ip = config::IpAddress::v4(0x0a800001u + static_cast<uint32_t>(i));
    pod.ips = {*pod.ip};
    pod.ports = {{"", 8080, "TCP"}};
    st.pods.push_back(std::move(pod));
  }
  for (int i = 0; i < kServices; ++i) {
    config::Service svc;
    svc.meta = meta("Service", "synth-" + std::to_string(i % kNs), "svc-" + std::to_string(i));
    svc.cluster_ip = config::IpAddress::v4(0x0a608000u + static_cast<uint32_t>(i));
    svc.cluster_ips = {*svc.cluster_ip};
    svc.selector = config::Labels{{"app", "app-" + std::to_string(i)}};
    svc.ports = {{"http", 80, {8080, ""}, "TCP"}};
    st.services.push_back(std::move(svc));
    config::PeerAuthentication pa;
    pa.meta = meta("PeerAuthentication", "synth-" + std::to_string(i % kNs), "policy-" + std::to_string(i), i);
    pa.selector = config::Labels{{"app", "app-" + std::to_string(i)}};
    pa.mode = i % 2 ? config::PeerMode::kStrict : config::PeerMode::kPermissive;
    st.peer_authentications.push_back(std::move(pa));
  }
  return st;
}

void BM_BuildLargeIndex(benchmark::State& state) {
  static const config::ClusterState large = makeLargeCluster();
  for (auto _ : state) benchmark::DoNotOptimize(PolicyIndex::build(large));
}
BENCHMARK(BM_BuildLargeIndex)->Unit(benchmark::kMillisecond);

const config::ClusterState& cluster() {
  static const config::ClusterState state = makeCluster();
  return state;
}

// Every decision one node's pods need: inbound per container port, outbound
// to every service port (by ClusterIP, as the agent sees connections).
std::size_t nodeDecisions(const PolicyIndex& ix, std::string_view node) {
  std::size_t n = 0;
  for (const config::Pod* pod : ix.podsOnNode(node)) {
    for (const auto& p : pod->ports) {
      benchmark::DoNotOptimize(ix.inbound(pod->uid, p.port));
      ++n;
    }
    for (const auto& svc : ix.state().services) {
      for (const auto& sp : svc.ports) {
        benchmark::DoNotOptimize(ix.outbound(*pod, Destination{svc.cluster_ip, {}}, sp.port));
        ++n;
      }
    }
  }
  return n;
}

void BM_BuildIndex(benchmark::State& state) {
  for (auto _ : state) {
    state.PauseTiming();
    config::ClusterState copy = cluster();
    state.ResumeTiming();
    benchmark::DoNotOptimize(PolicyIndex::build(std::move(copy)));
  }
}
BENCHMARK(BM_BuildIndex)->Unit(benchmark::kMillisecond);

// What every published update costs before the index: the source hands the
// agent a ClusterState (shared immutable objects: pointers are copied).
void BM_CopyState(benchmark::State& state) {
  for (auto _ : state) {
    config::ClusterState copy = cluster();
    benchmark::DoNotOptimize(copy);
  }
}
BENCHMARK(BM_CopyState)->Unit(benchmark::kMicrosecond);

void BM_NodeDecisions(benchmark::State& state) {
  auto ix = PolicyIndex::build(cluster());
  std::size_t n = 0;
  for (auto _ : state) n = nodeDecisions(*ix, "node3");
  state.counters["decisions"] = static_cast<double>(n);
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * n));
}
BENCHMARK(BM_NodeDecisions)->Unit(benchmark::kMillisecond);

// The target: a config change on a node = rebuild the index + every decision.
void BM_BuildAndNodeDecisions(benchmark::State& state) {
  std::size_t n = 0;
  for (auto _ : state) {
    state.PauseTiming();
    config::ClusterState copy = cluster();
    state.ResumeTiming();
    auto ix = PolicyIndex::build(std::move(copy));
    n = nodeDecisions(*ix, "node3");
  }
  state.counters["decisions"] = static_cast<double>(n);
}
BENCHMARK(BM_BuildAndNodeDecisions)->Unit(benchmark::kMillisecond);

void BM_InboundLookup(benchmark::State& state) {
  auto ix = PolicyIndex::build(cluster());
  config::PodUid uid("uid-1234");
  for (auto _ : state) benchmark::DoNotOptimize(ix->inbound(uid, 9090));
}
BENCHMARK(BM_InboundLookup);

void BM_OutboundByClusterIp(benchmark::State& state) {
  auto ix = PolicyIndex::build(cluster());
  config::PodUid uid("uid-1234");
  auto ip = config::IpAddress::v4(0x0a600000u + 1203);
  for (auto _ : state) benchmark::DoNotOptimize(ix->outbound(uid, Destination{ip, {}}, 80));
}
BENCHMARK(BM_OutboundByClusterIp);

void BM_OutboundByPodIp(benchmark::State& state) {
  auto ix = PolicyIndex::build(cluster());
  config::PodUid uid("uid-1234");
  auto ip = config::IpAddress::v4(0x0af40000u + 77);
  for (auto _ : state) benchmark::DoNotOptimize(ix->outbound(uid, Destination{ip, {}}, 8080));
}
BENCHMARK(BM_OutboundByPodIp);

void BM_OutboundByHost(benchmark::State& state) {
  auto ix = PolicyIndex::build(cluster());
  config::PodUid uid("uid-1234");
  Destination dst{std::nullopt, "svc3.ns12.svc.cluster.local"};
  for (auto _ : state) benchmark::DoNotOptimize(ix->outbound(uid, dst, 80));
}
BENCHMARK(BM_OutboundByHost);

// Issue 15's figure: one connection's authorization decision with 1,000
// AuthorizationPolicies in the mesh (20 per namespace: a namespace-wide
// ALLOW of principals in the namespace, DENYs by principal, port-scoped
// ALLOWs by selector), the destination pod under 1 namespace policy and its
// app's selector policies. The worst case: the peer matches no DENY and only
// the last ALLOW rule considered.
config::ClusterState withAuthorizationPolicies(int per_namespace) {
  config::ClusterState st = cluster();
  for (int n = 0; n < kNamespaces; ++n) {
    std::string ns = "ns" + std::to_string(n);
    for (int i = 0; i < per_namespace; ++i) {
      config::AuthorizationPolicy ap;
      ap.meta = meta("AuthorizationPolicy", ns, "ap" + std::to_string(i), i);
      config::AuthzRule rule;
      config::AuthzSource source;
      if (i == 0) {
        source.namespaces = {ns};
      } else if (i % 2 == 1) {
        ap.action = config::AuthzAction::kDeny;
        ap.selector = config::Labels{{"app", "svc" + std::to_string(i % kServicesPerNamespace)}};
        source.principals = {"cluster.local/ns/" + ns + "/sa/blocked" + std::to_string(i)};
      } else {
        ap.selector = config::Labels{{"app", "svc" + std::to_string(i % kServicesPerNamespace)}};
        source.principals = {"cluster.local/ns/other/sa/sa" + std::to_string(i), "*/sa/monitor"};
        config::AuthzOperation op;
        op.ports = {"9090"};
        rule.to.push_back(op);
      }
      rule.from.push_back(source);
      ap.rules.push_back(rule);
      st.authorization_policies.push_back(std::move(ap));
    }
  }
  return st;
}

void BM_AuthorizationDecision(benchmark::State& state) {
  auto ix = PolicyIndex::build(withAuthorizationPolicies(static_cast<int>(state.range(0))));
  const config::Pod* pod = ix->podByName("ns12", "pod4");  // app svc4: 2 selector ALLOWs, 2 DENYs
  AuthzRequest request{.source_principal = "spiffe://cluster.local/ns/ns12/sa/sa7",
                       .source_ip = config::IpAddress::v4(0x0af40000u + 500),
                       .destination_ip = *pod->ip,
                       .destination_port = 8080,
                       .sni = {}};
  for (auto _ : state) benchmark::DoNotOptimize(ix->authorization().decide(*pod, request));
  state.counters["policies"] = static_cast<double>(ix->state().authorization_policies.size());
  state.counters["applying"] = static_cast<double>(ix->authorization().applying(*pod).size());
}
BENCHMARK(BM_AuthorizationDecision)->Arg(0)->Arg(2)->Arg(20);

// The same cluster as YAML, through the manifest parser (what a reload costs before the index).
void BM_ParseManifests(benchmark::State& state) {
  std::string text;
  const auto& st = cluster();
  for (const auto& ns : st.namespaces) {
    text += "---\napiVersion: v1\nkind: Namespace\nmetadata: {name: " + ns.meta.ref.name + "}\n";
  }
  for (const auto& pod : st.pods) {
    text += "---\napiVersion: v1\nkind: Pod\nmetadata: {name: " + pod.name() + ", namespace: " + pod.ns() +
            ", uid: " + pod.uid.str() + ", labels: {app: " + pod.labels().at("app") +
            "}}\nspec: {serviceAccountName: " + pod.service_account + ", nodeName: " + pod.node_name +
            ", containers: [{name: c, ports: [{containerPort: 8080, name: http}, {containerPort: 9090}]}]}\n"
            "status: {podIP: " + pod.ip->toString() + "}\n";
  }
  for (const auto& svc : st.services) {
    text += "---\napiVersion: v1\nkind: Service\nmetadata: {name: " + svc.name() + ", namespace: " + svc.ns() +
            "}\nspec: {clusterIP: " + svc.cluster_ip->toString() + ", selector: {app: " + svc.selector->at("app") +
            "}, ports: [{name: http, port: 80, targetPort: http}, {name: metrics, port: 9090}]}\n";
  }
  for (int i = 0; i < 300; ++i) {
    text += "---\napiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: p" + std::to_string(i) +
            ", namespace: ns" + std::to_string(i % 50) + "}\nspec: {selector: {matchLabels: {app: svc1}}, mtls: {mode: STRICT}}\n";
  }
  std::size_t objects = 0;
  for (auto _ : state) {
    auto parsed = config::parseManifests(text, "bench.yaml");
    objects = parsed.state.objectCount();
    benchmark::DoNotOptimize(parsed);
  }
  state.counters["objects"] = static_cast<double>(objects);
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * text.size()));
}
BENCHMARK(BM_ParseManifests)->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace meshlock::policy

BENCHMARK_MAIN();
