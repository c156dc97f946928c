// Spec parsing and validation: defaults, and the exact message for each kind of bad field.
#include <gtest/gtest.h>

#include <string>

#include "spec.h"

namespace meshsim {
namespace {

constexpr const char* kGood = R"(
cgroupDriver: cgroupfs
nodes:
  - name: node-a
  - name: node-b
    podCIDR: 10.250.0.0/16
namespaces:
  - name: default
  - name: shop
    labels: {meshlock.io/mtls: enabled}
pods:
  - {name: web, namespace: shop, node: node-a, serviceAccount: web, labels: {app: web}, ports: [8080, 9090]}
  - {name: db, namespace: shop, node: node-a, ip: 10.244.1.2}
  - {name: api, namespace: default, node: node-b, uid: 3f6c2a9e-5b1d-4c8e-9a7f-0d2e4b6c8a10, qosClass: Guaranteed}
  - {name: third, namespace: shop, node: node-a}
services:
  - name: web
    namespace: shop
    clusterIP: 10.96.0.20
    ports: [{name: http, port: 80, targetPort: 8080}, {name: grpc, port: 9090, protocol: TCP}]
    selector: {app: web}
  - name: kubernetes
    clusterIP: 10.96.0.1
    ports: [{port: 443, targetPort: 6443}]
    endpoints: [10.250.0.2]
manifests:
  - apiVersion: security.istio.io/v1
    kind: PeerAuthentication
    metadata: {name: default, namespace: shop}
    spec: {mtls: {mode: STRICT}}
)";

std::string errorOf(const std::string& yaml) {
  auto spec = parseSpec(yaml);
  if (spec) return "(no error)";
  return spec.error().message;
}

// A minimal valid spec with `extra` appended to its pods / services.
std::string withPods(const std::string& pods) {
  return "nodes: [{name: node-a}, {name: node-b}]\nnamespaces: [{name: default}, {name: shop}]\npods:\n" + pods;
}
std::string withServices(const std::string& services) {
  return withPods("  - {name: web, namespace: shop, node: node-a, labels: {app: web}}\n") + "services:\n" + services;
}

TEST(SpecParse, GoodSpecWithDefaults) {
  auto spec = parseSpec(kGood);
  ASSERT_TRUE(spec) << spec.error().message;
  EXPECT_EQ(spec->cgroupDriver, CgroupDriver::Cgroupfs);
  ASSERT_EQ(spec->nodes.size(), 2u);
  EXPECT_EQ(spec->nodes[0].podCidr.str(), "10.244.1.0/24");  // default: 10.244.<i+1>.0/24
  EXPECT_EQ(spec->nodes[1].podCidr.str(), "10.250.0.0/16");
  EXPECT_EQ(spec->namespaces[1].labels.at("meshlock.io/mtls"), "enabled");

  const PodSpec* web = spec->findPod("shop", "web");
  ASSERT_NE(web, nullptr);
  EXPECT_EQ(web->serviceAccount, "web");
  EXPECT_EQ(web->ports, (std::vector<int>{8080, 9090}));
  EXPECT_EQ(web->qos, QosClass::BestEffort);
  EXPECT_TRUE(web->uid.empty());  // derived later from the run name
  // Sequential addresses from .2, skipping the one db asked for.
  EXPECT_EQ(spec->findPod("shop", "db")->ip.str(), "10.244.1.2");
  EXPECT_EQ(web->ip.str(), "10.244.1.3");
  EXPECT_EQ(spec->findPod("shop", "third")->ip.str(), "10.244.1.4");
  const PodSpec* api = spec->findPod("default", "api");
  EXPECT_EQ(api->ip.str(), "10.250.0.2");
  EXPECT_EQ(api->serviceAccount, "default");
  EXPECT_EQ(api->uid, "3f6c2a9e-5b1d-4c8e-9a7f-0d2e4b6c8a10");
  EXPECT_EQ(api->qos, QosClass::Guaranteed);

  ASSERT_EQ(spec->services.size(), 2u);
  const ServiceSpec& svc = spec->services[0];
  EXPECT_EQ(svc.clusterIp.str(), "10.96.0.20");
  EXPECT_EQ(svc.ports[1].targetPort, 9090);  // defaults to port
  EXPECT_EQ(svc.ports[1].protocol, "TCP");
  auto selected = selectedPods(*spec, svc);
  ASSERT_EQ(selected.size(), 1u);
  EXPECT_EQ(selected[0]->name, "web");
  EXPECT_EQ(spec->services[1].ns, "default");  // namespace defaults to default
  EXPECT_FALSE(spec->services[1].selector.has_value());
  EXPECT_EQ(spec->services[1].endpoints[0].str(), "10.250.0.2");
  ASSERT_EQ(spec->manifests.size(), 1u);
  EXPECT_EQ(spec->manifests[0]["kind"].Scalar(), "PeerAuthentication");
}

TEST(SpecParse, MinimalSpec) {
  auto spec = parseSpec("nodes: [{name: solo}]");
  ASSERT_TRUE(spec) << spec.error().message;
  EXPECT_EQ(spec->cgroupDriver, CgroupDriver::Systemd);
  EXPECT_TRUE(spec->pods.empty());
}

struct BadCase {
  const char* what;
  std::string yaml;
  std::string message;
};

void PrintTo(const BadCase& c, std::ostream* os) { *os << c.what; }

class SpecErrors : public testing::TestWithParam<BadCase> {};

TEST_P(SpecErrors, NamesTheField) { EXPECT_EQ(errorOf(GetParam().yaml), GetParam().message); }

INSTANTIATE_TEST_SUITE_P(
    Bad, SpecErrors,
    testing::Values(
        BadCase{"yaml", "nodes: [", "spec: invalid YAML at line 1, column 1: end of sequence flow not found"},
        BadCase{"top", "- a", "spec: expected a mapping with nodes, namespaces, pods, services, manifests"},
        BadCase{"top field", "nodes: [{name: a}]\nnode: x",
                "node: unknown field (expected one of: cgroupDriver, nodes, namespaces, pods, services, manifests)"},
        BadCase{"driver", "cgroupDriver: docker\nnodes: [{name: a}]",
                "cgroupDriver: \"docker\" is not one of systemd, cgroupfs"},
        BadCase{"no nodes", "namespaces: []", "nodes: required, at least one entry"},
        BadCase{"nodes not list", "nodes: {name: a}", "nodes: expected a list"},
        BadCase{"node name", "nodes: [{name: Node_A}]",
                "nodes[0].name: \"Node_A\" is not a valid node name (lowercase RFC 1123 label)"},
        BadCase{"node missing name", "nodes: [{podCIDR: 10.1.0.0/24}]", "nodes[0].name: required"},
        BadCase{"node field", "nodes: [{name: a, cidr: 10.1.0.0/24}]",
                "nodes[0].cidr: unknown field (expected one of: name, podCIDR)"},
        BadCase{"duplicate node", "nodes: [{name: a}, {name: a}]", "nodes[1].name: duplicate node \"a\""},
        BadCase{"cidr", "nodes: [{name: a, podCIDR: 10.1.0.1/24}]",
                "nodes[0].podCIDR: \"10.1.0.1/24\" is not an IPv4 CIDR with zero host bits (like 10.244.1.0/24)"},
        BadCase{"cidr prefix", "nodes: [{name: a, podCIDR: 10.1.0.0/30}]",
                "nodes[0].podCIDR: 10.1.0.0/30 must have a prefix between /8 and /29"},
        BadCase{"cidr overlap", "nodes: [{name: a}, {name: b, podCIDR: 10.244.0.0/16}]",
                "nodes[1].podCIDR: 10.244.0.0/16 overlaps nodes[0].podCIDR 10.244.1.0/24"},
        BadCase{"cidr fabric", "nodes: [{name: a, podCIDR: 172.18.0.0/16}]",
                "nodes[0].podCIDR: 172.18.0.0/16 overlaps meshsim's node fabric 172.18.0.0/24"},
        BadCase{"namespace name", "nodes: [{name: a}]\nnamespaces: [{name: Shop}]",
                "namespaces[0].name: \"Shop\" is not a valid namespace name (lowercase RFC 1123 label)"},
        BadCase{"duplicate namespace", "nodes: [{name: a}]\nnamespaces: [{name: x}, {name: x}]",
                "namespaces[1].name: duplicate namespace \"x\""},
        BadCase{"label key", "nodes: [{name: a}]\nnamespaces: [{name: x, labels: {'bad key': v}}]",
                "namespaces[0].labels: \"bad key\" is not a valid label key"},
        BadCase{"label value", "nodes: [{name: a}]\nnamespaces: [{name: x, labels: {k: 'a b'}}]",
                "namespaces[0].labels.k: \"a b\" is not a valid label value"},
        BadCase{"labels not map", "nodes: [{name: a}]\nnamespaces: [{name: x, labels: [a]}]",
                "namespaces[0].labels: expected a mapping of label keys to values"},
        BadCase{"unknown node",
                withPods("  - {name: p0, namespace: shop, node: node-a}\n  - {name: p1, namespace: shop, node: node-a}\n"
                         "  - {name: p2, namespace: shop, node: node-c}\n"),
                "pods[2].node: unknown node \"node-c\""},
        BadCase{"unknown namespace", withPods("  - {name: p, namespace: nope, node: node-a}\n"),
                "pods[0].namespace: unknown namespace \"nope\" (declare it under namespaces)"},
        BadCase{"pod missing node", withPods("  - {name: p, namespace: shop}\n"), "pods[0].node: required"},
        BadCase{"pod missing name", withPods("  - {namespace: shop, node: node-a}\n"), "pods[0].name: required"},
        BadCase{"pod field", withPods("  - {name: p, namespace: shop, node: node-a, lables: {}}\n"),
                "pods[0].lables: unknown field (expected one of: name, namespace, node, serviceAccount, labels, ports, "
                "ip, uid, qosClass)"},
        BadCase{"duplicate pod",
                withPods("  - {name: p, namespace: shop, node: node-a}\n  - {name: p, namespace: shop, node: node-b}\n"),
                "pods[1].name: duplicate pod \"shop/p\""},
        BadCase{"port", withPods("  - {name: p, namespace: shop, node: node-a, ports: [8080, http]}\n"),
                "pods[0].ports[1]: \"http\" is not a port number (1-65535)"},
        BadCase{"port range", withPods("  - {name: p, namespace: shop, node: node-a, ports: [70000]}\n"),
                "pods[0].ports[0]: \"70000\" is not a port number (1-65535)"},
        BadCase{"duplicate port", withPods("  - {name: p, namespace: shop, node: node-a, ports: [80, 80]}\n"),
                "pods[0].ports[1]: duplicate port 80"},
        BadCase{"ip", withPods("  - {name: p, namespace: shop, node: node-a, ip: 10.244.1.300}\n"),
                "pods[0].ip: \"10.244.1.300\" is not an IPv4 address"},
        BadCase{"ip outside", withPods("  - {name: p, namespace: shop, node: node-a, ip: 10.244.2.5}\n"),
                "pods[0].ip: 10.244.2.5 is not in node-a's podCIDR 10.244.1.0/24"},
        BadCase{"ip bridge", withPods("  - {name: p, namespace: shop, node: node-a, ip: 10.244.1.1}\n"),
                "pods[0].ip: 10.244.1.1 is reserved in 10.244.1.0/24 (network, bridge .1 or broadcast address)"},
        BadCase{"ip duplicate",
                withPods("  - {name: p, namespace: shop, node: node-a, ip: 10.244.1.7}\n"
                         "  - {name: q, namespace: shop, node: node-a, ip: 10.244.1.7}\n"),
                "pods[1].ip: 10.244.1.7 is already used by pods[0] (shop/p)"},
        BadCase{"cidr full",
                "nodes: [{name: a, podCIDR: 10.1.0.0/29}]\nnamespaces: [{name: default}]\npods:\n"
                "  - {name: p1, node: a}\n  - {name: p2, node: a}\n  - {name: p3, node: a}\n  - {name: p4, node: a}\n"
                "  - {name: p5, node: a}\n  - {name: p6, node: a}\n",
                "pods[5]: no free address left in a's podCIDR 10.1.0.0/29"},
        BadCase{"uid", withPods("  - {name: p, namespace: shop, node: node-a, uid: ABC}\n"),
                "pods[0].uid: \"ABC\" is not a lowercase UUID (like 3f6c2a9e-5b1d-4c8e-9a7f-0d2e4b6c8a10)"},
        BadCase{"qos", withPods("  - {name: p, namespace: shop, node: node-a, qosClass: Gold}\n"),
                "pods[0].qosClass: \"Gold\" is not one of Guaranteed, Burstable, BestEffort"},
        BadCase{"sa", withPods("  - {name: p, namespace: shop, node: node-a, serviceAccount: Bad_SA}\n"),
                "pods[0].serviceAccount: \"Bad_SA\" is not a valid service account name"},
        BadCase{"svc no ip", withServices("  - {name: s, namespace: shop, ports: [{port: 80}]}\n"),
                "services[0].clusterIP: required"},
        BadCase{"svc ip in pods", withServices("  - {name: s, namespace: shop, clusterIP: 10.244.1.9, ports: [{port: 80}]}\n"),
                "services[0].clusterIP: 10.244.1.9 is inside nodes[0].podCIDR 10.244.1.0/24"},
        BadCase{"svc ip dup",
                withServices("  - {name: s, namespace: shop, clusterIP: 10.96.0.5, ports: [{port: 80}]}\n"
                             "  - {name: t, namespace: shop, clusterIP: 10.96.0.5, ports: [{port: 80}]}\n"),
                "services[1].clusterIP: 10.96.0.5 is already used by services[0] (shop/s)"},
        BadCase{"svc no ports", withServices("  - {name: s, namespace: shop, clusterIP: 10.96.0.5}\n"),
                "services[0].ports: required, a list of {name, port, targetPort}"},
        BadCase{"svc port", withServices("  - {name: s, namespace: shop, clusterIP: 10.96.0.5, ports: [{port: 0}]}\n"),
                "services[0].ports[0].port: \"0\" is not a port number (1-65535)"},
        BadCase{"svc target",
                withServices("  - {name: s, namespace: shop, clusterIP: 10.96.0.5, ports: [{port: 80, targetPort: http}]}\n"),
                "services[0].ports[0].targetPort: \"http\" is not a port number (1-65535)"},
        BadCase{"svc port names",
                withServices("  - {name: s, namespace: shop, clusterIP: 10.96.0.5, ports: [{name: a, port: 80}, {port: 81}]}\n"),
                "services[0].ports[1].name: required when a service has several ports"},
        BadCase{"svc protocol",
                withServices("  - {name: s, namespace: shop, clusterIP: 10.96.0.5, ports: [{port: 80, protocol: SCTP}]}\n"),
                "services[0].ports[0].protocol: \"SCTP\" is not supported (TCP or UDP)"},
        BadCase{"svc both",
                withServices("  - {name: s, namespace: shop, clusterIP: 10.96.0.5, ports: [{port: 80}], selector: {app: web}, "
                             "endpoints: [10.244.1.2]}\n"),
                "services[0].endpoints: not allowed with a selector (endpoints are for selector-less services)"},
        BadCase{"svc endpoint",
                withServices("  - {name: s, namespace: shop, clusterIP: 10.96.0.5, ports: [{port: 80}], endpoints: [web]}\n"),
                "services[0].endpoints[0]: \"web\" is not an IPv4 address"},
        BadCase{"svc namespace",
                withServices("  - {name: s, namespace: other, clusterIP: 10.96.0.5, ports: [{port: 80}]}\n"),
                "services[0].namespace: unknown namespace \"other\" (declare it under namespaces)"},
        BadCase{"svc dup",
                withServices("  - {name: s, namespace: shop, clusterIP: 10.96.0.5, ports: [{port: 80}]}\n"
                             "  - {name: s, namespace: shop, clusterIP: 10.96.0.6, ports: [{port: 80}]}\n"),
                "services[1].name: duplicate service \"shop/s\""},
        BadCase{"manifest kind", "nodes: [{name: a}]\nmanifests: [{apiVersion: v1, metadata: {name: x}}]",
                "manifests[0].kind: required"},
        BadCase{"manifest name", "nodes: [{name: a}]\nmanifests: [{apiVersion: v1, kind: ConfigMap, metadata: {}}]",
                "manifests[0].metadata.name: required"},
        BadCase{"manifest generated",
                "nodes: [{name: a}]\nmanifests: [{apiVersion: v1, kind: Pod, metadata: {name: x}}]",
                "manifests[0].kind: Pod objects are generated by meshsim; declare them in the spec instead"}),
    [](const testing::TestParamInfo<BadCase>& info) {
      std::string name = info.param.what;
      for (char& c : name)
        if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
      return name;
    });

TEST(SpecParse, ManifestStreams) {
  auto docs = parseManifests(
      "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: a, namespace: shop}\n---\n"
      "apiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: ConfigMap, metadata: {name: b}}\n",
      "extra.yaml");
  ASSERT_TRUE(docs) << docs.error().message;
  ASSERT_EQ(docs->size(), 2u);
  EXPECT_EQ((*docs)[1]["kind"].Scalar(), "ConfigMap");
  auto bad = parseManifests("kind: X\nmetadata: {name: a}\n", "extra.yaml");
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().message, "extra.yaml[0].apiVersion: required");
}

TEST(SpecParse, Addresses) {
  EXPECT_EQ(parseIpv4("10.0.0.1")->str(), "10.0.0.1");
  EXPECT_FALSE(parseIpv4("10.0.0"));
  EXPECT_FALSE(parseIpv4("10.0.0.1.2"));
  EXPECT_FALSE(parseIpv4("10.0.0.01"));
  EXPECT_FALSE(parseIpv4("10.0.0.-1"));
  EXPECT_FALSE(parseIpv4(""));
  auto cidr = parseCidr("10.244.0.0/16");
  ASSERT_TRUE(cidr);
  EXPECT_TRUE(cidr->contains(*parseIpv4("10.244.255.3")));
  EXPECT_FALSE(cidr->contains(*parseIpv4("10.245.0.1")));
  EXPECT_EQ(cidr->last().str(), "10.244.255.255");
  EXPECT_FALSE(parseCidr("10.244.0.0"));
  EXPECT_FALSE(parseCidr("10.244.0.0/33"));
}

TEST(SpecParse, Names) {
  EXPECT_TRUE(isRunName("e2e-123-4567"));
  EXPECT_FALSE(isRunName("has_underscore"));
  EXPECT_FALSE(isRunName("this-run-name-is-far-too-long"));
  EXPECT_TRUE(isLabelKey("meshlock.io/mtls"));
  EXPECT_FALSE(isLabelKey("/mtls"));
  EXPECT_TRUE(isLabelValue(""));
}

}  // namespace
}  // namespace meshsim
