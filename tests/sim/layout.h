// Where a run puts everything: network namespace names, veth names, node and
// pod addresses, cgroup paths in the kubelet's layout. Pure: computed from the
// spec, the run name and the cgroup v2 mount, and stored in the run's state.
#pragma once

#include <nlohmann/json.hpp>

#include <string>
#include <vector>

#include "spec.h"

namespace meshsim {

inline constexpr std::string_view kNodeBridge = "cni0";    // in each node netns
inline constexpr std::string_view kNodeUplink = "eth0";    // node netns side of the fabric veth
inline constexpr std::string_view kFabricBridge = "br0";   // in the fabric netns
inline constexpr std::string_view kPodInterface = "eth0";  // pod netns side of the pod veth
inline constexpr std::string_view kNetnsDir = "/run/netns";
inline constexpr std::string_view kStateRoot = "/run/meshsim";
inline constexpr std::string_view kApiServerFabricIp = "172.18.0.1";  // on br0; port 6443

struct NodeLayout {
  std::string name;
  std::string netns;
  Cidr podCidr;
  Ipv4 bridgeIp;         // .1 of the pod CIDR, the pods' default gateway
  Ipv4 nodeIp;           // on the fabric
  std::string fabricVeth;  // the fabric netns end of the node's uplink
  std::string cgroupRoot;  // absolute; kubepods.slice or kubepods lives under it
};

struct PodLayout {
  std::string ns;
  std::string name;
  std::string node;
  std::string uid;
  Ipv4 ip;
  std::string netns;
  std::string hostVeth;        // node netns end of the pod veth
  std::string containerId;     // 64 hex characters
  std::string podCgroup;       // absolute
  std::string containerCgroup; // absolute; the pause process and exec'd commands live here
  int pausePid = 0;

  [[nodiscard]] std::string netnsPath() const { return std::string(kNetnsDir) + "/" + netns; }
  [[nodiscard]] std::string key() const { return ns + "/" + name; }
};

struct Layout {
  std::string run;
  std::string hash;         // 6 hex characters of the run name, for short interface names
  std::string cgroup2Root;  // the cgroup v2 mount used
  std::string runCgroup;    // <cgroup2Root>/meshsim-<run>: every cgroup of the run is below
  std::string fabricNetns;
  Spec spec;                // the cluster as it is now (labels and extra manifests change live)
  std::vector<NodeLayout> nodes;
  std::vector<PodLayout> pods;

  [[nodiscard]] const NodeLayout* findNode(std::string_view node) const;
  [[nodiscard]] PodLayout* findPod(std::string_view ns, std::string_view pod);
  [[nodiscard]] const PodLayout* findPod(std::string_view ns, std::string_view pod) const;
  [[nodiscard]] std::string runDir() const { return std::string(kStateRoot) + "/" + run; }
  [[nodiscard]] std::string manifestDir() const { return runDir() + "/manifests"; }
};

// Every name of a run starts with this, and nothing of another run does.
[[nodiscard]] std::string netnsPrefix(std::string_view run);
[[nodiscard]] std::string runHash(std::string_view run);

// Fills pod UIDs that the spec left out (derived from run, namespace, name).
[[nodiscard]] Layout makeLayout(Spec spec, const std::string& run, const std::string& cgroup2Root);

// The state file's form. fromJson rejects files it cannot use with a reason.
[[nodiscard]] nlohmann::json toJson(const Layout& layout);
[[nodiscard]] meshlock::Result<Layout> layoutFromJson(const nlohmann::json& json);

// What `status -o json` prints for one run (documented in docs/meshsim.md).
[[nodiscard]] nlohmann::json statusJson(const Layout& layout, std::string_view phase);

}  // namespace meshsim
