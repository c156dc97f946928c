// Manifests, nftables rules and name resolution files of a run.
#include "render.h"

#include <algorithm>
#include <cctype>
#include <fmt/format.h>

namespace meshsim {

namespace {

YAML::Node labelsNode(const Labels& labels) {
  YAML::Node node(YAML::NodeType::Map);
  for (const auto& [k, v] : labels) node[k] = v;
  return node;
}

YAML::Node namespaceManifest(const NamespaceSpec& ns) {
  YAML::Node m;
  m["apiVersion"] = "v1";
  m["kind"] = "Namespace";
  m["metadata"]["name"] = ns.name;
  Labels labels = ns.labels;
  labels.emplace("kubernetes.io/metadata.name", ns.name);  // as the API server adds it
  m["metadata"]["labels"] = labelsNode(labels);
  return m;
}

YAML::Node podManifest(const Layout& layout, const PodSpec& spec, const PodLayout& pod) {
  YAML::Node m;
  m["apiVersion"] = "v1";
  m["kind"] = "Pod";
  m["metadata"]["name"] = spec.name;
  m["metadata"]["namespace"] = spec.ns;
  m["metadata"]["uid"] = spec.uid;
  m["metadata"]["labels"] = labelsNode(spec.labels);
  m["spec"]["nodeName"] = spec.node;
  m["spec"]["serviceAccountName"] = spec.serviceAccount;
  YAML::Node container;
  container["name"] = "app";
  container["image"] = "meshsim/app";
  for (int port : spec.ports) {
    YAML::Node p;
    p["containerPort"] = port;
    p["protocol"] = "TCP";
    container["ports"].push_back(p);
  }
  m["spec"]["containers"].push_back(container);
  m["status"]["phase"] = "Running";
  m["status"]["hostIP"] = layout.findNode(spec.node)->nodeIp.str();
  m["status"]["podIP"] = spec.ip.str();
  YAML::Node ip;
  ip["ip"] = spec.ip.str();
  m["status"]["podIPs"].push_back(ip);
  m["status"]["qosClass"] = std::string(name(spec.qos));
  YAML::Node cs;
  cs["name"] = "app";
  cs["ready"] = true;
  cs["containerID"] = "containerd://" + pod.containerId;
  m["status"]["containerStatuses"].push_back(cs);
  return m;
}

YAML::Node serviceManifest(const ServiceSpec& svc) {
  YAML::Node m;
  m["apiVersion"] = "v1";
  m["kind"] = "Service";
  m["metadata"]["name"] = svc.name;
  m["metadata"]["namespace"] = svc.ns;
  m["spec"]["type"] = "ClusterIP";
  m["spec"]["clusterIP"] = svc.clusterIp.str();
  m["spec"]["clusterIPs"].push_back(svc.clusterIp.str());
  for (const auto& p : svc.ports) {
    YAML::Node port;
    if (!p.name.empty()) port["name"] = p.name;
    port["port"] = p.port;
    port["targetPort"] = p.targetPort;
    port["protocol"] = p.protocol;
    m["spec"]["ports"].push_back(port);
  }
  if (svc.selector) m["spec"]["selector"] = labelsNode(*svc.selector);
  return m;
}

YAML::Node endpointsManifest(const ServiceSpec& svc) {
  YAML::Node m;
  m["apiVersion"] = "v1";
  m["kind"] = "Endpoints";
  m["metadata"]["name"] = svc.name;
  m["metadata"]["namespace"] = svc.ns;
  YAML::Node subset;
  for (const auto& ip : svc.endpoints) {
    YAML::Node a;
    a["ip"] = ip.str();
    subset["addresses"].push_back(a);
  }
  for (const auto& p : svc.ports) {
    YAML::Node port;
    if (!p.name.empty()) port["name"] = p.name;
    port["port"] = p.targetPort;
    port["protocol"] = p.protocol;
    subset["ports"].push_back(port);
  }
  if (!svc.endpoints.empty()) m["subsets"].push_back(subset);
  return m;
}

std::string emitAll(const std::vector<YAML::Node>& docs) {
  YAML::Emitter out;
  for (const auto& d : docs) out << YAML::BeginDoc << d;
  return std::string(out.c_str()) + "\n";
}

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  return s;
}

}  // namespace

std::string manifestFileName(const YAML::Node& manifest) {
  std::string apiVersion = manifest["apiVersion"].Scalar();
  std::string kind = lower(manifest["kind"].Scalar());
  size_t slash = apiVersion.find('/');
  if (slash == std::string::npos) return kind + ".yaml";
  return kind + "." + lower(apiVersion.substr(0, slash)) + ".yaml";
}

std::map<std::string, std::string> renderManifests(const Layout& layout) {
  std::map<std::string, std::vector<YAML::Node>> byFile;
  for (const auto& ns : layout.spec.namespaces) byFile["namespace.yaml"].push_back(namespaceManifest(ns));
  for (const auto& pod : layout.spec.pods)
    byFile["pod.yaml"].push_back(podManifest(layout, pod, *layout.findPod(pod.ns, pod.name)));
  for (const auto& svc : layout.spec.services) {
    byFile["service.yaml"].push_back(serviceManifest(svc));
    if (!svc.selector) byFile["endpoints.yaml"].push_back(endpointsManifest(svc));
  }
  for (const auto& m : layout.spec.manifests) byFile[manifestFileName(m)].push_back(m);
  std::map<std::string, std::string> files;
  for (const auto& [file, docs] : byFile) files[file] = emitAll(docs);
  return files;
}

std::string renderAllManifests(const Layout& layout) {
  std::vector<YAML::Node> docs;
  for (const auto& ns : layout.spec.namespaces) docs.push_back(namespaceManifest(ns));
  for (const auto& pod : layout.spec.pods) docs.push_back(podManifest(layout, pod, *layout.findPod(pod.ns, pod.name)));
  for (const auto& svc : layout.spec.services) {
    docs.push_back(serviceManifest(svc));
    if (!svc.selector) docs.push_back(endpointsManifest(svc));
  }
  for (const auto& m : layout.spec.manifests) docs.push_back(m);
  return emitAll(docs);
}

std::vector<ServiceBackends> serviceBackends(const Layout& layout) {
  std::vector<ServiceBackends> out;
  for (const auto& svc : layout.spec.services) {
    ServiceBackends sb{&svc, {}};
    if (svc.selector) {
      for (const PodSpec* pod : selectedPods(layout.spec, svc)) sb.backends.push_back(pod->ip);
    } else {
      sb.backends = svc.endpoints;
    }
    out.push_back(sb);
  }
  return out;
}

std::string renderNftRuleset(const Layout& layout) {
  std::string rules;
  for (const auto& sb : serviceBackends(layout)) {
    for (const auto& port : sb.service->ports) {
      std::string proto = lower(port.protocol);
      std::string match = fmt::format("ip daddr {} {} dport {}", sb.service->clusterIp.str(), proto, port.port);
      std::string comment = fmt::format("comment \"{}/{}:{}\"", sb.service->ns, sb.service->name, port.port);
      if (sb.backends.empty()) {
        // Like kube-proxy: a service with no endpoints refuses at once.
        rules += fmt::format("    {} reject{} {}\n", match, proto == "tcp" ? " with tcp reset" : "", comment);
      } else if (sb.backends.size() == 1) {
        rules += fmt::format("    {} dnat to {}:{} {}\n", match, sb.backends[0].str(), port.targetPort, comment);
      } else {
        std::string map;
        for (size_t i = 0; i < sb.backends.size(); ++i)
          map += fmt::format("{}{} : {}", i ? ", " : "", i, sb.backends[i].str());
        rules += fmt::format("    {} dnat to numgen random mod {} map {{ {} }} : {} {}\n", match, sb.backends.size(),
                             map, port.targetPort, comment);
      }
    }
  }
  // A pod reaching itself through a service: masquerade, so that its reply
  // leaves the pod and is un-DNATed (kube-proxy's hairpin rule; the pod veths
  // are in hairpin mode too).
  std::string hairpin;
  for (const auto& pod : layout.pods)
    hairpin += fmt::format("{}{} . {}", hairpin.empty() ? "" : ", ", pod.ip.str(), pod.ip.str());
  std::string postrouting;
  if (!hairpin.empty())
    postrouting = fmt::format("    ct status dnat ip saddr . ip daddr {{ {} }} masquerade\n", hairpin);
  // Declare, delete and re-add in one transaction: the swap is atomic.
  return fmt::format(
      "table ip {0}\n"
      "delete table ip {0}\n"
      "table ip {0} {{\n"
      "  chain services {{\n{1}  }}\n"
      "  chain prerouting {{\n    type nat hook prerouting priority dstnat; policy accept;\n    jump services\n  }}\n"
      "  chain output {{\n    type nat hook output priority -100; policy accept;\n    jump services\n  }}\n"
      "  chain postrouting {{\n    type nat hook postrouting priority srcnat; policy accept;\n{2}  }}\n"
      "}}\n",
      kNftTable, rules, postrouting);
}

std::string renderHosts(const Layout& layout, const PodLayout& pod) {
  std::string out = "# written by meshsim for " + pod.key() + "\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost\n";
  out += fmt::format("{}\t{}\n", pod.ip.str(), pod.name);
  for (const auto& svc : layout.spec.services) {
    std::string names = fmt::format("{0}.{1}.svc.cluster.local {0}.{1}.svc {0}.{1}", svc.name, svc.ns);
    if (svc.ns == pod.ns) names += " " + svc.name;
    out += fmt::format("{}\t{}\n", svc.clusterIp.str(), names);
  }
  return out;
}

std::string renderResolvConf(const PodLayout& pod) {
  // No cluster DNS server: names resolve from the hosts file, and the
  // loopback nameserver makes other lookups fail at once instead of timing out.
  return fmt::format(
      "# written by meshsim\nsearch {}.svc.cluster.local svc.cluster.local cluster.local\nnameserver 127.0.0.1\n"
      "options ndots:1 timeout:1 attempts:1\n",
      pod.ns);
}

}  // namespace meshsim
