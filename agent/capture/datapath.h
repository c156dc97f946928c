// The capture datapath of one agent: loads the BPF programs, attaches them
// (or takes over the pinned links of a previous agent process, with no gap),
// keeps the pod maps, opens the in-pod listeners and answers "where was this
// accepted connection going". Everything lives under one pin directory, so
// several agents (one per meshsim node) coexist.
#pragma once

#include <array>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "capture/bpf_abi.h"
#include "capture/leg_shortcut.h"
#include "capture/pod_discovery.h"
#include "capture/socket_address.h"
#include "common/error.h"
#include "common/unique_fd.h"

namespace meshlock::capture {

struct DatapathConfig {
  std::filesystem::path pin_dir = "/sys/fs/bpf/meshlock";
  // Mount a bpffs where pin_dir has none (a host or meshsim run). Off in a
  // container: a bpffs it mounted would die with it, and the pins with it.
  bool mount_bpffs = true;
  // The kubepods cgroup (v2) where the connect and sockops programs attach.
  std::filesystem::path pods_cgroup_root;
  std::uint16_t outbound_port = 15001;
  std::uint16_t inbound_port = 15006;
  // Destination ports never captured in either direction (the agent's own).
  std::vector<std::uint16_t> agent_ports = {15000, 15001, 15006, 15020};
  LegShortcut pod_leg_shortcut = LegShortcut::Off;
  // The agent's own cgroup (v2), where sockops also attaches so the agent's
  // sockets join the shortcut; empty when the agent is below
  // pods_cgroup_root (its DaemonSet pod on a node), which sockops sees.
  std::filesystem::path agent_cgroup;
};

// The agent's own cgroup v2 directory when it is neither below `pods_root`
// nor the mount's root (where a hook would see every socket of the machine):
// where the shortcut's sockops must also attach. Empty when nothing is
// needed; an error when the shortcut cannot see the agent's sockets.
[[nodiscard]] Result<std::filesystem::path> agentCgroupFor(const std::filesystem::path& pods_root);

// What the agent wants for one pod. Enrolment decisions (labels, policy)
// are made upstream; capture applies them.
struct PodSpec {
  PodUid uid;
  std::string name;                     // "namespace/name", for messages
  std::filesystem::path cgroup_dir;     // the pod-level cgroup
  std::filesystem::path netns_path;     // empty: via a process in cgroup_dir
  std::vector<IpAddress> addresses;     // empty: the netns's own addresses
  bool capture_outbound = true;
  bool capture_inbound = true;
  bool inbound_fail_closed = false;     // no inbound listener: refuse (STRICT)
  std::vector<std::uint16_t> inbound_ports;  // empty: every port
  std::vector<std::uint16_t> excluded_inbound_ports;
  std::vector<std::uint16_t> excluded_outbound_ports;
};

// The in-pod sockets for the engine. Closing an inbound listener takes it
// out of the sockhash (the kernel does so on close).
struct PodListeners {
  UniqueFd netns;         // the pod's netns, for upstream connections
  UniqueFd outbound_v4;   // 127.0.0.1:<outbound_port>
  UniqueFd outbound_v6;   // [::1]:<outbound_port>; invalid if the pod has no IPv6 loopback
  UniqueFd inbound_v4;    // 127.0.0.1:<inbound_port>, steered to by sk_lookup
  UniqueFd inbound_v6;    // [::1]:<inbound_port>; invalid without IPv6
  std::uint64_t netns_cookie = 0;
  std::uint64_t pod_cgroup_id = 0;
  std::vector<IpAddress> addresses;  // the pod addresses steered inbound
};

struct OriginalDestination {
  SocketAddress destination;  // what the application passed to connect()
  std::uint64_t pod_cgroup_id = 0;
};

// A pod known from the pins (also those of a previous agent process).
struct PinnedPod {
  PodUid uid;
  std::uint64_t pod_cgroup_id = 0;
};

using Counters = std::array<std::uint64_t, ML_CTR_MAX>;

// A loaded program and the links that attach it, as the kernel reports them.
struct ProgramInfo {
  std::string name;         // the kernel's (truncated) name: "ml_connect4"
  std::string type;         // libbpf's program type name: "cgroup_sock_addr", "sk_lookup", ...
  std::string attach_type;  // the hook: "cgroup/connect4", "sockops", "sk_lookup"
  std::uint32_t id = 0;
  struct Link {
    std::uint32_t id = 0;
    std::string target;  // "cgroup <id> (<path>)", "netns <inode> (pod <uid>)"
  };
  std::vector<Link> links;
};

// A shared map: its size and, for hash maps, how many entries it holds now.
struct MapInfo {
  std::string name;
  std::string type;  // "hash", "lru_hash", "sockhash", "percpu_array", ...
  std::uint32_t id = 0;
  std::uint32_t max_entries = 0;
  std::optional<std::uint32_t> entries;  // counted by walking the keys; nullopt for arrays
};

struct DatapathInfo {
  std::vector<ProgramInfo> programs;
  std::vector<MapInfo> maps;
};

class Datapath {
 public:
  // Loads the programs and attaches them, or swaps them into the links a
  // previous process pinned (bpf_link_update: capture never stops).
  [[nodiscard]] static Result<Datapath> install(const DatapathConfig& config);
  // Detaches and unpins every link, map and pin under `pin_dir`.
  [[nodiscard]] static Status uninstall(const std::filesystem::path& pin_dir);

  Datapath(Datapath&&) noexcept;
  Datapath& operator=(Datapath&&) noexcept;
  ~Datapath();

  // Registers the pod, opens its listeners inside its netns and attaches
  // sk_lookup there. Calling it again for an enrolled pod replaces its rules
  // and listeners (how a restarted agent takes pods back).
  [[nodiscard]] Result<PodListeners> enrollPod(const PodSpec& pod);
  // Changes flags and port rules of an enrolled pod without touching its
  // sockets (label or annotation changes; new connections follow).
  [[nodiscard]] Status updatePodRules(const PodSpec& pod);
  // Removes the pod from every map and detaches its sk_lookup link.
  [[nodiscard]] Status withdrawPod(const PodUid& uid);
  [[nodiscard]] std::vector<PinnedPod> pinnedPods() const;

  // Marks a socket the agent is about to connect to a pod's app, so that
  // with the shortcut on sockops puts it (and the app's end) in the sockhash.
  // A no-op when the shortcut is off.
  [[nodiscard]] Status markAgentUpstream(int fd) const;

  // Where an accepted outbound connection (from an outbound listener) was
  // going. Consumes the entry: call once per accepted socket.
  [[nodiscard]] Result<OriginalDestination> originalDestination(int accepted_fd);

  [[nodiscard]] Result<Counters> counters() const;
  // Programs (with their links) and shared maps (with their fill), read from
  // the kernel by bpf_obj_get_info_by_fd; one syscall per map entry counted.
  [[nodiscard]] Result<DatapathInfo> describe() const;
  // Counters and pods of the agent pinned at `pin_dir`, without loading
  // anything (for `meshlock-agent capture-status`, doctor-style tools).
  [[nodiscard]] static Result<Counters> pinnedCounters(const std::filesystem::path& pin_dir);
  [[nodiscard]] static std::vector<PinnedPod> pinnedPods(const std::filesystem::path& pin_dir);
  // True when install() took over links pinned by a previous process.
  [[nodiscard]] bool reusedPinnedLinks() const;
  [[nodiscard]] const DatapathConfig& config() const;

 private:
  struct State;
  explicit Datapath(std::unique_ptr<State> state);
  std::unique_ptr<State> state_;
};

}  // namespace meshlock::capture
