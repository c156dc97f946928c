// The layout (names, addresses, kubelet cgroup paths) and the text meshsim
// writes (manifests, nftables rules, hosts files), from a spec alone.
#include <gtest/gtest.h>

#include "layout.h"
#include "render.h"

namespace meshsim {
namespace {

constexpr const char* kSpec = R"(
nodes: [{name: node-a}, {name: node-b}]
namespaces: [{name: default}, {name: shop, labels: {meshlock.io/mtls: enabled}}]
pods:
  - {name: web-1, namespace: shop, node: node-a, labels: {app: web}, ports: [8080]}
  - {name: web-2, namespace: shop, node: node-b, labels: {app: web}, ports: [8080], qosClass: Guaranteed}
  - {name: api, namespace: default, node: node-b, ip: 10.244.2.10, uid: 3f6c2a9e-5b1d-4c8e-9a7f-0d2e4b6c8a10, qosClass: Burstable}
services:
  - {name: web, namespace: shop, clusterIP: 10.96.0.20, ports: [{name: http, port: 80, targetPort: 8080}], selector: {app: web}}
  - {name: kubernetes, namespace: default, clusterIP: 10.96.0.1, ports: [{port: 443, targetPort: 8080}], endpoints: [10.244.2.10]}
  - {name: empty, namespace: shop, clusterIP: 10.96.0.30, ports: [{port: 81}], selector: {app: none}}
manifests:
  - {apiVersion: security.istio.io/v1, kind: PeerAuthentication, metadata: {name: default, namespace: shop}, spec: {mtls: {mode: STRICT}}}
)";

Layout layoutOf(const std::string& yaml, const std::string& run = "r1") {
  auto spec = parseSpec(yaml);
  EXPECT_TRUE(spec) << spec.error().message;
  return makeLayout(*spec, run, "/sys/fs/cgroup/unified");
}

TEST(Layout, NamesCarryTheRunPrefix) {
  Layout l = layoutOf(kSpec);
  EXPECT_EQ(l.fabricNetns, "msim-r1_fabric");
  EXPECT_EQ(l.nodes[0].netns, "msim-r1_node_node-a");
  EXPECT_EQ(l.pods[0].netns, "msim-r1_pod_shop_web-1");
  EXPECT_EQ(l.runCgroup, "/sys/fs/cgroup/unified/meshsim-r1");
  EXPECT_EQ(l.nodes[1].cgroupRoot, "/sys/fs/cgroup/unified/meshsim-r1/node-b");
  EXPECT_EQ(l.nodes[0].nodeIp.str(), "172.18.0.2");
  EXPECT_EQ(l.nodes[1].nodeIp.str(), "172.18.0.3");
  EXPECT_EQ(l.nodes[1].bridgeIp.str(), "10.244.2.1");
  for (const auto& p : l.pods) EXPECT_LE(p.hostVeth.size(), 15u) << p.hostVeth;
  for (const auto& n : l.nodes) EXPECT_LE(n.fabricVeth.size(), 15u) << n.fabricVeth;
  EXPECT_EQ(l.pods[0].hostVeth.substr(2, 6), l.hash);
  EXPECT_EQ(l.pods[0].containerId.size(), 64u);
}

TEST(Layout, TwoRunsShareNoName) {
  Layout a = layoutOf(kSpec, "a"), b = layoutOf(kSpec, "b");
  EXPECT_NE(a.hash, b.hash);
  EXPECT_NE(a.pods[0].uid, b.pods[0].uid);  // derived UIDs differ per run
  EXPECT_NE(a.pods[0].hostVeth, b.pods[0].hostVeth);
  EXPECT_NE(a.pods[0].containerCgroup, b.pods[0].containerCgroup);
  EXPECT_EQ(a.pods[2].uid, "3f6c2a9e-5b1d-4c8e-9a7f-0d2e4b6c8a10");  // given UIDs are kept
  EXPECT_EQ(layoutOf(kSpec, "a").pods[0].uid, a.pods[0].uid);      // and derived ones are stable
}

TEST(Layout, SystemdCgroupsAsKubelet) {
  Layout l = layoutOf(kSpec);
  const PodLayout& api = l.pods[2];
  std::string root = "/sys/fs/cgroup/unified/meshsim-r1/node-b/kubepods.slice";
  EXPECT_EQ(api.podCgroup, root + "/kubepods-burstable.slice/kubepods-burstable-pod3f6c2a9e_5b1d_4c8e_9a7f_0d2e4b6c8a10.slice");
  EXPECT_EQ(api.containerCgroup, api.podCgroup + "/cri-containerd-" + api.containerId + ".scope");
  EXPECT_TRUE(l.pods[1].podCgroup.starts_with(root + "/kubepods-pod"));  // Guaranteed: directly under kubepods
  EXPECT_NE(l.pods[0].podCgroup.find("/kubepods-besteffort.slice/kubepods-besteffort-pod"), std::string::npos);
}

TEST(Layout, CgroupfsCgroupsAsKubelet) {
  Layout l = layoutOf(std::string("cgroupDriver: cgroupfs\n") + kSpec);
  std::string root = "/sys/fs/cgroup/unified/meshsim-r1/node-b/kubepods";
  EXPECT_EQ(l.pods[2].podCgroup, root + "/burstable/pod3f6c2a9e-5b1d-4c8e-9a7f-0d2e4b6c8a10");
  EXPECT_EQ(l.pods[2].containerCgroup, l.pods[2].podCgroup + "/" + l.pods[2].containerId);
  EXPECT_EQ(l.pods[1].podCgroup, root + "/pod" + l.pods[1].uid);
}

TEST(Layout, StateRoundTrip) {
  Layout l = layoutOf(kSpec);
  l.pods[1].pausePid = 4242;
  auto back = layoutFromJson(toJson(l));
  ASSERT_TRUE(back) << back.error().message;
  EXPECT_EQ(toJson(*back), toJson(l));
  EXPECT_EQ(back->pods[1].pausePid, 4242);
  EXPECT_EQ(back->spec.manifests[0]["spec"]["mtls"]["mode"].Scalar(), "STRICT");
}

TEST(Layout, StateOfAnotherRunIsRefused) {
  auto j = toJson(layoutOf(kSpec));
  j["pods"][0]["netns"] = "msim-other_pod_shop_web-1";
  auto back = layoutFromJson(j);
  ASSERT_FALSE(back);
  EXPECT_EQ(back.error().message, "state names of pod shop/web-1 do not belong to run r1");
}

TEST(Layout, StatusJsonHasWhatTheAgentNeeds) {
  auto j = statusJson(layoutOf(kSpec), "ready");
  EXPECT_EQ(j["nodes"][0]["netns"], "msim-r1_node_node-a");
  EXPECT_EQ(j["nodes"][0]["cgroupRoot"], "/sys/fs/cgroup/unified/meshsim-r1/node-a");
  const auto& pod = j["pods"][0];
  for (const char* key : {"namespace", "name", "uid", "ip", "node", "netns", "netnsPath", "pausePid", "podCgroup",
                          "containerCgroup", "serviceAccount", "labels"})
    EXPECT_TRUE(pod.contains(key)) << key;
  EXPECT_EQ(pod["netnsPath"], "/run/netns/msim-r1_pod_shop_web-1");
  EXPECT_EQ(j["services"][0]["backends"].size(), 2u);
}

TEST(Render, NftRulesStandInForKubeProxy) {
  std::string rules = renderNftRuleset(layoutOf(kSpec));
  EXPECT_NE(rules.find("ip daddr 10.96.0.20 tcp dport 80 dnat to numgen random mod 2 map { 0 : 10.244.1.2, 1 : "
                       "10.244.2.2 } : 8080"),
            std::string::npos)
      << rules;
  EXPECT_NE(rules.find("ip daddr 10.96.0.1 tcp dport 443 dnat to 10.244.2.10:8080"), std::string::npos) << rules;
  EXPECT_NE(rules.find("ip daddr 10.96.0.30 tcp dport 81 reject with tcp reset"), std::string::npos) << rules;
  EXPECT_TRUE(rules.starts_with("table ip meshsim\ndelete table ip meshsim\n"));  // atomic replace
}

TEST(Render, HostsResolveServiceNames) {
  Layout l = layoutOf(kSpec);
  std::string hosts = renderHosts(l, l.pods[0]);  // shop/web-1
  EXPECT_NE(hosts.find("10.96.0.20\tweb.shop.svc.cluster.local web.shop.svc web.shop web\n"), std::string::npos);
  EXPECT_NE(hosts.find("10.96.0.1\tkubernetes.default.svc.cluster.local kubernetes.default.svc kubernetes.default\n"),
            std::string::npos);
  EXPECT_NE(hosts.find("10.244.1.2\tweb-1\n"), std::string::npos);
  EXPECT_NE(renderResolvConf(l.pods[0]).find("search shop.svc.cluster.local"), std::string::npos);
}

TEST(Render, ManifestsOneFilePerKind) {
  Layout l = layoutOf(kSpec);
  auto files = renderManifests(l);
  std::vector<std::string> names;
  for (const auto& [name, _] : files) names.push_back(name);
  EXPECT_EQ(names, (std::vector<std::string>{"endpoints.yaml", "namespace.yaml",
                                             "peerauthentication.security.istio.io.yaml", "pod.yaml",
                                             "service.yaml"}));
  auto pods = YAML::LoadAll(files["pod.yaml"]);
  ASSERT_EQ(pods.size(), 3u);
  EXPECT_EQ(pods[0]["metadata"]["uid"].Scalar(), l.pods[0].uid);
  EXPECT_EQ(pods[0]["spec"]["nodeName"].Scalar(), "node-a");
  EXPECT_EQ(pods[0]["spec"]["serviceAccountName"].Scalar(), "default");
  EXPECT_EQ(pods[0]["status"]["podIP"].Scalar(), "10.244.1.2");
  EXPECT_EQ(pods[0]["spec"]["containers"][0]["ports"][0]["containerPort"].as<int>(), 8080);
  auto namespaces = YAML::LoadAll(files["namespace.yaml"]);
  EXPECT_EQ(namespaces[1]["metadata"]["labels"]["meshlock.io/mtls"].Scalar(), "enabled");
  auto endpoints = YAML::LoadAll(files["endpoints.yaml"]);
  ASSERT_EQ(endpoints.size(), 1u);  // only for the selector-less service
  EXPECT_EQ(endpoints[0]["subsets"][0]["addresses"][0]["ip"].Scalar(), "10.244.2.10");
  EXPECT_EQ(endpoints[0]["subsets"][0]["ports"][0]["port"].as<int>(), 8080);
  auto services = YAML::LoadAll(files["service.yaml"]);
  EXPECT_EQ(services[0]["spec"]["clusterIP"].Scalar(), "10.96.0.20");
  EXPECT_EQ(services[0]["spec"]["selector"]["app"].Scalar(), "web");
  EXPECT_FALSE(services[1]["spec"]["selector"]);
  EXPECT_EQ(YAML::LoadAll(renderAllManifests(l)).size(), 3u + 2u + 3u + 1u + 1u);
}

}  // namespace
}  // namespace meshsim
