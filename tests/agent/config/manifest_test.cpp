// Manifest parsing: every kind, multi-document and List files, and bad input
// that must name file, document and field while the rest still loads.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fstream>
#include <random>

#include "config/manifest.h"

namespace meshlock::config {
namespace {

using testing::HasSubstr;

std::string allMessages(const ParsedManifests& p) {
  std::string s;
  for (const auto& e : p.errors) s += e.describe() + "\n";
  return s;
}

TEST(ParseManifests, ReadsEveryKind) {
  auto p = parseManifests(R"(
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {meshlock.io/mtls: enabled}}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: shop, uid: u-1, labels: {app: web}, creationTimestamp: "2024-01-01T00:00:00Z"}
spec:
  serviceAccountName: web
  nodeName: node-a
  containers:
  - name: web
    ports: [{containerPort: 8080, name: http}, {containerPort: 9090}]
status: {podIP: 10.244.1.10, podIPs: [{ip: 10.244.1.10}, {ip: "fd00::10"}]}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  clusterIP: 10.96.10.10
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: http}, {port: 9090}]
---
apiVersion: v1
kind: Endpoints
metadata: {name: kubernetes, namespace: default}
subsets: [{addresses: [{ip: 172.18.0.2}], ports: [{name: https, port: 6443}]}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: ext-abc, namespace: shop, labels: {kubernetes.io/service-name: ext}}
endpoints: [{addresses: [10.244.1.10], targetRef: {kind: Pod, name: web}}]
ports: [{name: http, port: 8080}]
---
apiVersion: security.istio.io/v1beta1
kind: PeerAuthentication
metadata: {name: web, namespace: shop}
spec:
  selector: {matchLabels: {app: web}}
  mtls: {mode: STRICT}
  portLevelMtls: {"9090": {mode: PERMISSIVE}}
---
apiVersion: networking.istio.io/v1alpha3
kind: DestinationRule
metadata: {name: web, namespace: shop}
spec:
  host: web
  exportTo: ["."]
  trafficPolicy:
    tls: {mode: SIMPLE, sni: web.example, subjectAltNames: [a, b]}
    portLevelSettings: [{port: {number: 9090}, tls: {mode: DISABLE}}]
---
apiVersion: sailoperator.io/v1
kind: Istio
metadata: {name: default}
spec:
  namespace: istio-system
  values: {meshConfig: {enableAutoMtls: false, trustDomain: example.org, meshMTLS: {minProtocolVersion: TLSV1_3}}}
---
apiVersion: maistra.io/v2
kind: ServiceMeshControlPlane
metadata: {name: basic, namespace: istio-system}
spec: {security: {dataPlane: {mtls: true}}}
---
apiVersion: authentication.maistra.io/v1
kind: Policy
metadata: {name: default, namespace: shop}
spec: {peers: [{mtls: {mode: PERMISSIVE}}]}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: istio, namespace: istio-system}
data:
  mesh: |
    enableAutoMtls: true
    rootNamespace: mesh-root
)",
                          "all.yaml");
  ASSERT_TRUE(p.errors.empty()) << allMessages(p);
  const ClusterState& s = p.state;
  ASSERT_EQ(s.namespaces.size(), 1u);
  EXPECT_EQ(s.namespaces[0].meta.labels.at("meshlock.io/mtls"), "enabled");
  ASSERT_EQ(s.pods.size(), 1u);
  const Pod& pod = s.pods[0];
  EXPECT_EQ(pod.uid, PodUid("u-1"));
  EXPECT_EQ(pod.service_account, "web");
  EXPECT_EQ(pod.node_name, "node-a");
  EXPECT_EQ(pod.ip->toString(), "10.244.1.10");
  EXPECT_EQ(pod.ips.size(), 2u);
  EXPECT_EQ(pod.containerPortNamed("http"), 8080);
  EXPECT_EQ(pod.meta.creation_timestamp, "2024-01-01T00:00:00Z");
  ASSERT_EQ(s.services.size(), 1u);
  EXPECT_EQ(s.services[0].ports[0].target.name, "http");
  EXPECT_EQ(s.services[0].ports[1].target.number, 9090);
  ASSERT_EQ(s.endpoints.size(), 2u);
  EXPECT_EQ(s.endpoints[1].service, "ext");
  EXPECT_EQ(s.endpoints[1].addresses[0].pod_name, "web");
  ASSERT_EQ(s.peer_authentications.size(), 2u);
  EXPECT_EQ(s.peer_authentications[0].mode, PeerMode::kStrict);
  EXPECT_EQ(s.peer_authentications[0].port_level.at(9090), PeerMode::kPermissive);
  EXPECT_EQ(s.peer_authentications[1].meta.ref.kind, "Policy");
  EXPECT_EQ(s.peer_authentications[1].mode, PeerMode::kPermissive);
  ASSERT_EQ(s.destination_rules.size(), 1u);
  EXPECT_EQ(s.destination_rules[0].tls->mode, TlsMode::kSimple);
  EXPECT_EQ(s.destination_rules[0].tls->subject_alt_names.size(), 2u);
  EXPECT_EQ(s.destination_rules[0].port_level[0].tls->mode, TlsMode::kDisable);
  ASSERT_EQ(s.control_planes.size(), 3u);
  EXPECT_EQ(s.control_planes[0].mesh.trust_domain, "example.org");
  EXPECT_EQ(s.control_planes[0].mesh.min_protocol_version, TlsVersion::kTls13);
  EXPECT_EQ(s.control_planes[0].mesh.enable_auto_mtls, false);
  EXPECT_TRUE(s.control_planes[1].mesh_mtls);
  EXPECT_EQ(s.control_planes[2].kind, ControlPlaneKind::kMeshConfigMap);
  EXPECT_EQ(s.control_planes[2].mesh.root_namespace, "mesh-root");
}

TEST(ParseManifests, OwnerIsTheControllerReference) {
  auto p = parseManifests(R"(
apiVersion: v1
kind: Pod
metadata:
  name: db-0
  namespace: shop
  ownerReferences:
  - {apiVersion: v1, kind: ConfigMap, name: not-a-controller}
  - {apiVersion: apps/v1, kind: StatefulSet, name: db, controller: true}
---
apiVersion: v1
kind: Pod
metadata: {name: bare, namespace: shop}
)",
                          "owners.yaml");
  ASSERT_TRUE(p.errors.empty()) << allMessages(p);
  ASSERT_EQ(p.state.pods.size(), 2u);
  ASSERT_TRUE(p.state.pods[0].meta.owner.has_value());
  EXPECT_EQ(p.state.pods[0].meta.owner->kind, "StatefulSet");
  EXPECT_EQ(p.state.pods[0].meta.owner->name, "db");
  EXPECT_FALSE(p.state.pods[1].meta.owner.has_value());
}

TEST(ParseManifests, ListKindsAndJson) {
  auto p = parseManifests(R"({"apiVersion": "v1", "kind": "List", "items": [
    {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "a"}},
    {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "b"}}]})",
                          "list.json");
  EXPECT_TRUE(p.errors.empty()) << allMessages(p);
  EXPECT_EQ(p.state.namespaces.size(), 2u);
}

TEST(ParseManifests, UnknownKindsAreIgnoredWithANote) {
  auto p = parseManifests("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\n", "d.yaml");
  EXPECT_TRUE(p.errors.empty());
  ASSERT_EQ(p.ignored.size(), 1u);
  EXPECT_THAT(p.ignored[0], HasSubstr("Deployment"));
}

TEST(ParseManifests, SyntaxErrorNamesFileDocumentAndLineAndKeepsTheOtherDocuments) {
  auto p = parseManifests(
      "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\nkind: [oops\n---\n"
      "apiVersion: v1\nkind: Namespace\nmetadata: {name: c}\n",
      "dir/bad.yaml");
  ASSERT_EQ(p.errors.size(), 1u);
  EXPECT_EQ(p.errors[0].origin, "dir/bad.yaml");
  EXPECT_EQ(p.errors[0].document, 1);
  EXPECT_THAT(p.errors[0].describe(), HasSubstr("dir/bad.yaml: document 2: invalid YAML at line "));
  EXPECT_EQ(p.state.namespaces.size(), 2u);
}

// istio/api networking/v1alpha3/service_entry.proto: location and resolution
// default to their first values (MESH_EXTERNAL, NONE); endpoint ports by name.
TEST(ParseManifests, ServiceEntry) {
  auto p = parseManifests(R"(
apiVersion: networking.istio.io/v1beta1
kind: ServiceEntry
metadata: {name: api, namespace: shop}
spec:
  hosts: [api.example.com, '*.wiki.example.com']
  addresses: [240.240.0.10, 240.241.0.0/16]
  ports: [{number: 443, name: tls, protocol: TLS}, {number: 80, name: http, targetPort: 8080}]
  location: MESH_INTERNAL
  resolution: STATIC
  endpoints: [{address: 10.1.2.3, ports: {tls: 8443}, labels: {v: "1"}}, {address: api.internal}]
  exportTo: ["."]
  subjectAltNames: [spiffe://cluster.local/ns/shop/sa/api]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: defaults, namespace: shop}
spec: {hosts: [x.example.com], workloadSelector: {labels: {app: vm}}}
)",
                          "se.yaml");
  ASSERT_TRUE(p.errors.empty()) << allMessages(p);
  ASSERT_EQ(p.state.service_entries.size(), 2u);
  const ServiceEntry& se = p.state.service_entries[0];
  EXPECT_THAT(se.hosts, ::testing::ElementsAre("api.example.com", "*.wiki.example.com"));
  EXPECT_EQ(se.addresses.size(), 2u);
  ASSERT_EQ(se.ports.size(), 2u);
  EXPECT_EQ(se.ports[1].target_port, 8080);
  EXPECT_EQ(se.location, ServiceEntryLocation::kMeshInternal);
  EXPECT_EQ(se.resolution, ServiceEntryResolution::kStatic);
  ASSERT_EQ(se.endpoints.size(), 2u);
  EXPECT_EQ(se.endpoints[0].ip->toString(), "10.1.2.3");
  EXPECT_EQ(se.endpoints[0].ports.at("tls"), 8443);
  EXPECT_FALSE(se.endpoints[1].ip.has_value());
  EXPECT_EQ(se.subject_alt_names.size(), 1u);
  const ServiceEntry& defaults = p.state.service_entries[1];
  EXPECT_EQ(defaults.location, ServiceEntryLocation::kMeshExternal);
  EXPECT_EQ(defaults.resolution, ServiceEntryResolution::kNone);
  EXPECT_EQ(defaults.workload_selector->at("app"), "vm");

  auto bad = parseManifests(
      "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: x, namespace: shop}\n"
      "spec: {hosts: [a.example.com], resolution: DNS_RR}\n---\n"
      "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: y, namespace: shop}\nspec: {}\n",
      "bad.yaml");
  ASSERT_EQ(bad.errors.size(), 2u) << allMessages(bad);
  EXPECT_EQ(bad.errors[0].field, "spec.resolution");
  EXPECT_EQ(bad.errors[1].field, "spec.hosts");
}

// metav1.LabelSelector in discoverySelectors and ServiceMeshMemberRoll.
TEST(ParseManifests, MemberRollAndDiscoverySelectors) {
  auto p = parseManifests(R"(
apiVersion: maistra.io/v1
kind: ServiceMeshMemberRoll
metadata: {name: default, namespace: istio-system}
spec: {members: [shop, '*'], memberSelectors: [{matchExpressions: [{key: team, operator: Exists}]}]}
---
apiVersion: sailoperator.io/v1
kind: Istio
metadata: {name: default}
spec: {values: {meshConfig: {discoverySelectors: [{matchLabels: {a: b}}, {matchExpressions: [{key: t, operator: NotIn, values: [x]}]}]}}}
---
apiVersion: sailoperator.io/v1
kind: Istio
metadata: {name: bad}
spec: {values: {meshConfig: {discoverySelectors: [{matchExpressions: [{key: t, operator: Near}]}]}}}
)",
                          "m.yaml");
  ASSERT_EQ(p.errors.size(), 1u) << allMessages(p);
  EXPECT_EQ(p.errors[0].field, "spec.values.meshConfig.discoverySelectors[0].matchExpressions[0].operator");
  ASSERT_EQ(p.state.member_rolls.size(), 1u);
  EXPECT_THAT(p.state.member_rolls[0].members, ::testing::ElementsAre("shop", "*"));
  EXPECT_TRUE(p.state.member_rolls[0].member_selectors[0].matches({{"team", "x"}}));
  EXPECT_FALSE(p.state.member_rolls[0].member_selectors[0].matches({{"other", "x"}}));
  ASSERT_EQ(p.state.control_planes.size(), 1u);
  const auto& selectors = p.state.control_planes[0].mesh.discovery_selectors;
  ASSERT_EQ(selectors.size(), 2u);
  EXPECT_TRUE(selectors[0].matches({{"a", "b"}}));
  EXPECT_TRUE(selectors[1].matches({}));
  EXPECT_FALSE(selectors[1].matches({{"t", "x"}}));
}

TEST(ParseManifests, UnknownModeNamesTheField) {
  auto p = parseManifests(
      "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: x, namespace: shop}\n"
      "spec: {mtls: {mode: STRCT}}\n",
      "pa.yaml");
  ASSERT_EQ(p.errors.size(), 1u);
  EXPECT_EQ(p.errors[0].field, "spec.mtls.mode");
  EXPECT_THAT(p.errors[0].describe(), HasSubstr("pa.yaml: document 1: spec.mtls.mode: unknown mode \"STRCT\""));
  EXPECT_TRUE(p.state.peer_authentications.empty());
}

TEST(ParseManifests, WrongTypeNamesTheField) {
  auto p = parseManifests(
      "apiVersion: v1\nkind: Pod\nmetadata: {name: web, namespace: shop}\n"
      "spec: {containers: [{name: a, ports: [{containerPort: eighty}]}]}\n",
      "pod.yaml");
  ASSERT_EQ(p.errors.size(), 1u);
  EXPECT_EQ(p.errors[0].field, "spec.containers[0].ports[0].containerPort");
  EXPECT_THAT(p.errors[0].message, HasSubstr("expected a number"));
  auto q = parseManifests("apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {ports: {port: 80}}\n", "s.yaml");
  ASSERT_EQ(q.errors.size(), 1u);
  EXPECT_EQ(q.errors[0].field, "spec.ports");
  EXPECT_THAT(q.errors[0].message, HasSubstr("expected a list"));
}

TEST(ParseManifests, MissingNameInAListItemNamesTheItem) {
  auto p = parseManifests(R"(apiVersion: v1
kind: List
items:
- {apiVersion: v1, kind: Namespace, metadata: {name: ok}}
- {apiVersion: v1, kind: Namespace, metadata: {labels: {a: b}}}
)",
                          "l.yaml");
  ASSERT_EQ(p.errors.size(), 1u);
  EXPECT_EQ(p.errors[0].field, "items[1].metadata.name");
  EXPECT_THAT(p.errors[0].message, HasSubstr("required"));
  EXPECT_EQ(p.state.namespaces.size(), 1u);
}

TEST(ParseManifests, BadPortsAndIps) {
  auto p = parseManifests(R"(apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: x, namespace: shop}
spec: {selector: {matchLabels: {a: b}}, portLevelMtls: {http: {mode: STRICT}}}
---
apiVersion: v1
kind: Pod
metadata: {name: p}
status: {podIP: 10.0.0.999}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: d}
spec: {host: a, trafficPolicy: {tls: {mode: ISTIO}}}
)",
                          "b.yaml");
  ASSERT_EQ(p.errors.size(), 3u) << allMessages(p);
  EXPECT_EQ(p.errors[0].field, "spec.portLevelMtls.http");
  EXPECT_EQ(p.errors[1].field, "status.podIP");
  EXPECT_EQ(p.errors[2].field, "spec.trafficPolicy.tls.mode");
}

TEST(ParseManifests, NeverThrowsOnGarbage) {
  std::string seed = R"(apiVersion: v1
kind: Pod
metadata: {name: web, namespace: shop, labels: {app: web}}
spec: {containers: [{ports: [{containerPort: 80}]}]}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: x}
spec: {mtls: {mode: STRICT}, portLevelMtls: {"80": {mode: DISABLE}}}
)";
  std::mt19937 rng(42);
  const std::string alphabet = "{}[]:-,'\"\n\t #&*!|>%@`abc019";
  for (int i = 0; i < 3000; ++i) {
    std::string text = seed;
    int edits = 1 + static_cast<int>(rng() % 8);
    for (int e = 0; e < edits; ++e) {
      std::size_t pos = rng() % (text.size() + 1);
      switch (rng() % 3) {
        case 0: text.insert(pos, 1, alphabet[rng() % alphabet.size()]); break;
        case 1: if (pos < text.size()) text.erase(pos, 1); break;
        default: if (pos < text.size()) text[pos] = alphabet[rng() % alphabet.size()]; break;
      }
    }
    EXPECT_NO_THROW((void)parseManifests(text, "fuzz.yaml"));
  }
  EXPECT_NO_THROW((void)parseManifests(std::string(5000, '['), "deep.yaml"));
  EXPECT_NO_THROW((void)parseManifests(std::string("\0\xff\xfe", 3), "bin.yaml"));
}

class ManifestDirectory : public testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("meshlock-config-test-" + std::to_string(::getpid()) + "-" +
            testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  void write(const std::string& rel, const std::string& text) {
    auto p = dir_ / rel;
    std::filesystem::create_directories(p.parent_path());
    std::ofstream(p) << text;
  }
  std::filesystem::path dir_;
};

TEST_F(ManifestDirectory, LoadsRecursivelyAndSkipsHiddenAndOtherFiles) {
  write("a.yaml", "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n");
  write("sub/deeper/b.yml", "apiVersion: v1\nkind: Namespace\nmetadata: {name: b}\n");
  write("c.json", R"({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "c"}})");
  write("notes.txt", "apiVersion: v1\nkind: Namespace\nmetadata: {name: txt}\n");
  write(".hidden/d.yaml", "apiVersion: v1\nkind: Namespace\nmetadata: {name: hidden}\n");
  auto loaded = loadManifestDirectory(dir_);
  ASSERT_TRUE(loaded);
  EXPECT_TRUE(loaded->errors.empty());
  std::vector<std::string> names;
  for (const auto& ns : loaded->state.namespaces) names.push_back(ns.meta.ref.name);
  std::sort(names.begin(), names.end());
  EXPECT_EQ(names, (std::vector<std::string>{"a", "b", "c"}));
}

TEST_F(ManifestDirectory, AMountedConfigMapIsReadOnce) {
  // The kubelet's layout: ..<timestamp>/file, ..data -> ..<timestamp>, file -> ..data/file.
  write("..2024_01_01/ns.yaml", "apiVersion: v1\nkind: Namespace\nmetadata: {name: cm}\n");
  std::filesystem::create_directory_symlink("..2024_01_01", dir_ / "..data");
  std::filesystem::create_symlink("..data/ns.yaml", dir_ / "ns.yaml");
  auto loaded = loadManifestDirectory(dir_);
  ASSERT_TRUE(loaded);
  ASSERT_EQ(loaded->state.namespaces.size(), 1u);
  EXPECT_EQ(loaded->state.namespaces[0].meta.ref.name, "cm");
}

TEST_F(ManifestDirectory, ABadFileDoesNotStopTheOthers) {
  write("good.yaml", "apiVersion: v1\nkind: Namespace\nmetadata: {name: good}\n");
  write("bad.yaml", "apiVersion: v1\nkind: Namespace\nmetadata: [\n");
  auto loaded = loadManifestDirectory(dir_);
  ASSERT_TRUE(loaded);
  ASSERT_EQ(loaded->errors.size(), 1u);
  EXPECT_THAT(loaded->errors[0].describe(), HasSubstr("bad.yaml: document 1: invalid YAML"));
  EXPECT_EQ(loaded->state.namespaces.size(), 1u);
}

TEST_F(ManifestDirectory, MissingDirectoryIsAnError) {
  auto loaded = loadManifestDirectory(dir_ / "nope");
  ASSERT_FALSE(loaded);
  EXPECT_THAT(loaded.error().describe(), HasSubstr("nope"));
}

TEST_F(ManifestDirectory, ManifestSetKeepsTheLastGoodStateOfAFile) {
  write("ns.yaml", "apiVersion: v1\nkind: Namespace\nmetadata: {name: one}\n");
  ManifestSet set;
  ASSERT_TRUE(set.reload(dir_));
  EXPECT_EQ(set.state().namespaces.size(), 1u);
  write("ns.yaml", "apiVersion: v1\nkind: Namespace\nmetadata: {name: one}\n---\nkind: [\n");
  ASSERT_TRUE(set.reload(dir_));
  EXPECT_EQ(set.state().namespaces.size(), 1u);
  auto errors = set.errors();
  ASSERT_EQ(errors.size(), 2u);
  EXPECT_THAT(errors[1].message, HasSubstr("keeping the last good contents"));
  write("ns.yaml", "apiVersion: v1\nkind: Namespace\nmetadata: {name: two}\n");
  ASSERT_TRUE(set.reload(dir_));
  ASSERT_EQ(set.state().namespaces.size(), 1u);
  EXPECT_EQ(set.state().namespaces[0].meta.ref.name, "two");
  EXPECT_TRUE(set.errors().empty());
  std::filesystem::remove(dir_ / "ns.yaml");
  ASSERT_TRUE(set.reload(dir_));
  EXPECT_TRUE(set.state().namespaces.empty());
}

}  // namespace
}  // namespace meshlock::config
