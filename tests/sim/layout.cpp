// Names, addresses and cgroup paths of a run, and the state file's JSON form.
#include "layout.h"

#include <fmt/format.h>

namespace meshsim {

using json = nlohmann::json;
using meshlock::fail;
using meshlock::Result;

namespace {

uint64_t fnv1a(std::string_view data, uint64_t seed) {
  uint64_t h = 0xcbf29ce484222325ull ^ seed;
  for (unsigned char c : data) {
    h ^= c;
    h *= 0x100000001b3ull;
  }
  // Final avalanche so that similar inputs differ in every hex digit.
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdull;
  h ^= h >> 33;
  return h;
}

std::string hex(uint64_t value, int digits) { return fmt::format("{:016x}", value).substr(16 - digits); }

std::string derivedUid(std::string_view run, const PodSpec& pod) {
  std::string key = fmt::format("{}\n{}\n{}", run, pod.ns, pod.name);
  std::string h = hex(fnv1a(key, 1), 16) + hex(fnv1a(key, 2), 16);
  // Shaped as a version 4 UUID, like the API server's.
  h[12] = '4';
  h[16] = "89ab"[h[16] % 4];
  return fmt::format("{}-{}-{}-{}-{}", h.substr(0, 8), h.substr(8, 4), h.substr(12, 4), h.substr(16, 4),
                     h.substr(20, 12));
}

std::string qosSlug(QosClass qos) { return qos == QosClass::Burstable ? "burstable" : "besteffort"; }

// kubelet's layout for both drivers; Guaranteed pods sit directly under kubepods.
std::pair<std::string, std::string> podCgroups(const std::string& nodeRoot, CgroupDriver driver, const PodSpec& pod,
                                               const std::string& containerId) {
  if (driver == CgroupDriver::Systemd) {
    std::string uid = pod.uid;
    std::replace(uid.begin(), uid.end(), '-', '_');
    std::string parent = nodeRoot + "/kubepods.slice";
    std::string podDir;
    if (pod.qos == QosClass::Guaranteed) {
      podDir = parent + "/kubepods-pod" + uid + ".slice";
    } else {
      std::string q = qosSlug(pod.qos);
      parent += "/kubepods-" + q + ".slice";
      podDir = parent + "/kubepods-" + q + "-pod" + uid + ".slice";
    }
    return {podDir, podDir + "/cri-containerd-" + containerId + ".scope"};
  }
  std::string parent = nodeRoot + "/kubepods";
  if (pod.qos != QosClass::Guaranteed) parent += "/" + qosSlug(pod.qos);
  std::string podDir = parent + "/pod" + pod.uid;
  return {podDir, podDir + "/" + containerId};
}

json labelsJson(const Labels& labels) {
  json j = json::object();
  for (const auto& [k, v] : labels) j[k] = v;
  return j;
}

Labels labelsFrom(const json& j) {
  Labels labels;
  for (const auto& [k, v] : j.items()) labels[k] = v.get<std::string>();
  return labels;
}

json specJson(const Spec& spec) {
  json j;
  j["cgroupDriver"] = name(spec.cgroupDriver);
  for (const auto& n : spec.nodes) j["nodes"].push_back({{"name", n.name}, {"podCIDR", n.podCidr.str()}});
  j["namespaces"] = json::array();
  for (const auto& n : spec.namespaces) j["namespaces"].push_back({{"name", n.name}, {"labels", labelsJson(n.labels)}});
  j["pods"] = json::array();
  for (const auto& p : spec.pods) {
    j["pods"].push_back({{"name", p.name},
                         {"namespace", p.ns},
                         {"node", p.node},
                         {"serviceAccount", p.serviceAccount},
                         {"labels", labelsJson(p.labels)},
                         {"ports", p.ports},
                         {"ip", p.ip.str()},
                         {"uid", p.uid},
                         {"qosClass", name(p.qos)}});
  }
  j["services"] = json::array();
  for (const auto& s : spec.services) {
    json svc = {{"name", s.name}, {"namespace", s.ns}, {"clusterIP", s.clusterIp.str()}};
    for (const auto& p : s.ports)
      svc["ports"].push_back({{"name", p.name}, {"port", p.port}, {"targetPort", p.targetPort}, {"protocol", p.protocol}});
    if (s.selector) svc["selector"] = labelsJson(*s.selector);
    svc["endpoints"] = json::array();
    for (const auto& e : s.endpoints) svc["endpoints"].push_back(e.str());
    j["services"].push_back(svc);
  }
  j["manifests"] = json::array();
  for (const auto& m : spec.manifests) {
    YAML::Emitter out;
    out << m;
    j["manifests"].push_back(out.c_str());
  }
  return j;
}

Ipv4 ipFrom(const json& j) {
  auto ip = parseIpv4(j.get<std::string>());
  if (!ip) throw json::other_error::create(501, "bad IPv4 address " + j.get<std::string>(), nullptr);
  return *ip;
}

Cidr cidrFrom(const json& j) {
  auto cidr = parseCidr(j.get<std::string>());
  if (!cidr) throw json::other_error::create(501, "bad CIDR " + j.get<std::string>(), nullptr);
  return *cidr;
}

Spec specFrom(const json& j) {
  Spec spec;
  spec.cgroupDriver = j.at("cgroupDriver") == "cgroupfs" ? CgroupDriver::Cgroupfs : CgroupDriver::Systemd;
  for (const auto& n : j.at("nodes")) spec.nodes.push_back({n.at("name"), cidrFrom(n.at("podCIDR"))});
  for (const auto& n : j.at("namespaces")) spec.namespaces.push_back({n.at("name"), labelsFrom(n.at("labels"))});
  for (const auto& p : j.at("pods")) {
    PodSpec pod;
    pod.name = p.at("name");
    pod.ns = p.at("namespace");
    pod.node = p.at("node");
    pod.serviceAccount = p.at("serviceAccount");
    pod.labels = labelsFrom(p.at("labels"));
    pod.ports = p.at("ports").get<std::vector<int>>();
    pod.ip = ipFrom(p.at("ip"));
    pod.uid = p.at("uid");
    std::string qos = p.at("qosClass");
    pod.qos = qos == "Guaranteed" ? QosClass::Guaranteed
              : qos == "Burstable" ? QosClass::Burstable
                                   : QosClass::BestEffort;
    spec.pods.push_back(pod);
  }
  for (const auto& s : j.at("services")) {
    ServiceSpec svc;
    svc.name = s.at("name");
    svc.ns = s.at("namespace");
    svc.clusterIp = ipFrom(s.at("clusterIP"));
    for (const auto& p : s.at("ports"))
      svc.ports.push_back({p.at("name"), p.at("port"), p.at("targetPort"), p.at("protocol")});
    if (s.contains("selector")) svc.selector = labelsFrom(s.at("selector"));
    for (const auto& e : s.at("endpoints")) svc.endpoints.push_back(ipFrom(e));
    spec.services.push_back(svc);
  }
  for (const auto& m : j.at("manifests")) spec.manifests.push_back(YAML::Load(m.get<std::string>()));
  return spec;
}

}  // namespace

std::string runHash(std::string_view run) { return hex(fnv1a(run, 0), 6); }
std::string netnsPrefix(std::string_view run) { return fmt::format("msim-{}_", run); }

const NodeLayout* Layout::findNode(std::string_view node) const {
  for (const auto& n : nodes)
    if (n.name == node) return &n;
  return nullptr;
}
PodLayout* Layout::findPod(std::string_view ns, std::string_view pod) {
  for (auto& p : pods)
    if (p.ns == ns && p.name == pod) return &p;
  return nullptr;
}
const PodLayout* Layout::findPod(std::string_view ns, std::string_view pod) const {
  return const_cast<Layout*>(this)->findPod(ns, pod);
}

Layout makeLayout(Spec spec, const std::string& run, const std::string& cgroup2Root) {
  Layout layout;
  layout.run = run;
  layout.hash = runHash(run);
  layout.cgroup2Root = cgroup2Root;
  layout.runCgroup = cgroup2Root + "/meshsim-" + run;
  // Separator counts keep the kinds apart: fabric has one '_', nodes two,
  // pods three; Kubernetes names never contain '_'.
  std::string prefix = netnsPrefix(run);
  layout.fabricNetns = prefix + "fabric";
  for (size_t i = 0; i < spec.nodes.size(); ++i) {
    const NodeSpec& n = spec.nodes[i];
    NodeLayout node;
    node.name = n.name;
    node.netns = prefix + "node_" + n.name;
    node.podCidr = n.podCidr;
    node.bridgeIp = Ipv4{n.podCidr.first().value + 1};
    node.nodeIp = Ipv4{kFabricCidr.first().value + 2 + static_cast<uint32_t>(i)};
    node.fabricVeth = fmt::format("mf{}n{}", layout.hash, i);
    node.cgroupRoot = layout.runCgroup + "/" + n.name;
    layout.nodes.push_back(node);
  }
  for (size_t i = 0; i < spec.pods.size(); ++i) {
    PodSpec& p = spec.pods[i];
    if (p.uid.empty()) p.uid = derivedUid(run, p);
    PodLayout pod;
    pod.ns = p.ns;
    pod.name = p.name;
    pod.node = p.node;
    pod.uid = p.uid;
    pod.ip = p.ip;
    pod.netns = prefix + "pod_" + p.ns + "_" + p.name;
    pod.hostVeth = fmt::format("mv{}p{}", layout.hash, i);
    std::string key = fmt::format("{}\n{}\n{}", run, p.ns, p.name);
    pod.containerId = hex(fnv1a(key, 3), 16) + hex(fnv1a(key, 4), 16) + hex(fnv1a(key, 5), 16) + hex(fnv1a(key, 6), 16);
    auto [podDir, containerDir] = podCgroups(layout.findNode(p.node)->cgroupRoot, spec.cgroupDriver, p, pod.containerId);
    pod.podCgroup = podDir;
    pod.containerCgroup = containerDir;
    layout.pods.push_back(pod);
  }
  layout.spec = std::move(spec);
  return layout;
}

json toJson(const Layout& layout) {
  json j;
  j["version"] = 1;
  j["run"] = layout.run;
  j["hash"] = layout.hash;
  j["cgroup2Root"] = layout.cgroup2Root;
  j["runCgroup"] = layout.runCgroup;
  j["fabricNetns"] = layout.fabricNetns;
  j["spec"] = specJson(layout.spec);
  for (const auto& n : layout.nodes) {
    j["nodes"].push_back({{"name", n.name},
                          {"netns", n.netns},
                          {"podCIDR", n.podCidr.str()},
                          {"bridgeIP", n.bridgeIp.str()},
                          {"nodeIP", n.nodeIp.str()},
                          {"fabricVeth", n.fabricVeth},
                          {"cgroupRoot", n.cgroupRoot}});
  }
  j["pods"] = json::array();
  for (const auto& p : layout.pods) {
    j["pods"].push_back({{"namespace", p.ns},
                         {"name", p.name},
                         {"node", p.node},
                         {"uid", p.uid},
                         {"ip", p.ip.str()},
                         {"netns", p.netns},
                         {"hostVeth", p.hostVeth},
                         {"containerId", p.containerId},
                         {"podCgroup", p.podCgroup},
                         {"containerCgroup", p.containerCgroup},
                         {"pausePid", p.pausePid}});
  }
  return j;
}

Result<Layout> layoutFromJson(const json& j) {
  try {
    if (j.at("version") != 1) return fail("unsupported state version " + j.at("version").dump());
    Layout layout;
    layout.run = j.at("run");
    layout.hash = j.at("hash");
    layout.cgroup2Root = j.at("cgroup2Root");
    layout.runCgroup = j.at("runCgroup");
    layout.fabricNetns = j.at("fabricNetns");
    layout.spec = specFrom(j.at("spec"));
    for (const auto& n : j.at("nodes")) {
      NodeLayout node;
      node.name = n.at("name");
      node.netns = n.at("netns");
      node.podCidr = cidrFrom(n.at("podCIDR"));
      node.bridgeIp = ipFrom(n.at("bridgeIP"));
      node.nodeIp = ipFrom(n.at("nodeIP"));
      node.fabricVeth = n.at("fabricVeth");
      node.cgroupRoot = n.at("cgroupRoot");
      layout.nodes.push_back(node);
    }
    for (const auto& p : j.at("pods")) {
      PodLayout pod;
      pod.ns = p.at("namespace");
      pod.name = p.at("name");
      pod.node = p.at("node");
      pod.uid = p.at("uid");
      pod.ip = ipFrom(p.at("ip"));
      pod.netns = p.at("netns");
      pod.hostVeth = p.at("hostVeth");
      pod.containerId = p.at("containerId");
      pod.podCgroup = p.at("podCgroup");
      pod.containerCgroup = p.at("containerCgroup");
      pod.pausePid = p.at("pausePid");
      layout.pods.push_back(pod);
    }
    // The names must be this run's, so a damaged file can never make down touch another run.
    std::string prefix = netnsPrefix(layout.run);
    auto ours = [&](const std::string& name) { return name.starts_with(prefix); };
    if (!isRunName(layout.run) || !ours(layout.fabricNetns) || !layout.runCgroup.ends_with("/meshsim-" + layout.run))
      return fail("state names do not belong to run " + layout.run);
    for (const auto& n : layout.nodes)
      if (!ours(n.netns) || !n.cgroupRoot.starts_with(layout.runCgroup + "/"))
        return fail("state names of node " + n.name + " do not belong to run " + layout.run);
    for (const auto& p : layout.pods)
      if (!ours(p.netns) || !p.containerCgroup.starts_with(layout.runCgroup + "/"))
        return fail("state names of pod " + p.key() + " do not belong to run " + layout.run);
    return layout;
  } catch (const std::exception& e) {
    return fail(std::string("malformed state: ") + e.what());
  }
}

json statusJson(const Layout& layout, std::string_view phase) {
  json j;
  j["run"] = layout.run;
  j["phase"] = phase;
  j["stateDir"] = layout.runDir();
  j["manifestDir"] = layout.manifestDir();
  j["cgroup2Root"] = layout.cgroup2Root;
  j["runCgroup"] = layout.runCgroup;
  j["cgroupDriver"] = name(layout.spec.cgroupDriver);
  j["fabricNetns"] = layout.fabricNetns;
  j["nodes"] = json::array();
  for (const auto& n : layout.nodes) {
    j["nodes"].push_back({{"name", n.name},
                          {"netns", n.netns},
                          {"netnsPath", std::string(kNetnsDir) + "/" + n.netns},
                          {"podCIDR", n.podCidr.str()},
                          {"bridgeIP", n.bridgeIp.str()},
                          {"nodeIP", n.nodeIp.str()},
                          {"cgroupRoot", n.cgroupRoot}});
  }
  j["pods"] = json::array();
  for (const auto& p : layout.pods) {
    const PodSpec* spec = layout.spec.findPod(p.ns, p.name);
    j["pods"].push_back({{"namespace", p.ns},
                         {"name", p.name},
                         {"uid", p.uid},
                         {"ip", p.ip.str()},
                         {"node", p.node},
                         {"serviceAccount", spec->serviceAccount},
                         {"labels", labelsJson(spec->labels)},
                         {"ports", spec->ports},
                         {"qosClass", name(spec->qos)},
                         {"netns", p.netns},
                         {"netnsPath", p.netnsPath()},
                         {"pausePid", p.pausePid},
                         {"podCgroup", p.podCgroup},
                         {"containerCgroup", p.containerCgroup},
                         {"containerId", p.containerId}});
  }
  j["services"] = json::array();
  for (const auto& s : layout.spec.services) {
    json svc = {{"namespace", s.ns}, {"name", s.name}, {"clusterIP", s.clusterIp.str()}};
    svc["ports"] = json::array();
    for (const auto& p : s.ports)
      svc["ports"].push_back({{"name", p.name}, {"port", p.port}, {"targetPort", p.targetPort}, {"protocol", p.protocol}});
    svc["backends"] = json::array();
    if (s.selector) {
      for (const PodSpec* pod : selectedPods(layout.spec, s)) svc["backends"].push_back(pod->ip.str());
    } else {
      for (const auto& e : s.endpoints) svc["backends"].push_back(e.str());
    }
    j["services"].push_back(svc);
  }
  return j;
}

}  // namespace meshsim
