// `meshlock-agent capture-harness`: the capture datapath with a plaintext
// relay in place of the TLS engine, for end-to-end tests of capture alone
// (meshsim, the fixture tests) and for debugging a node. Not the agent: it
// applies no policy and encrypts nothing. One line per relayed connection on
// stdout ("outbound <uid> <client> -> <original destination>", "inbound <uid>
// <peer> -> <pod address>"), "ready" once every pod is enrolled.
#include <poll.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <sys/socket.h>

#include <cstdio>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "capture/datapath.h"
#include "capture/netns.h"
#include "capture/pod_discovery.h"
#include "common/command.h"

namespace {

using namespace meshlock;
using namespace meshlock::capture;

struct HarnessOptions {
  std::string cgroup_root;
  std::string pin_dir = "/sys/fs/bpf/meshlock";
  std::vector<std::string> pods;
  std::vector<std::uint16_t> excluded_outbound, excluded_inbound;
  bool strict = false;
};

// Copies bytes both ways until both directions saw EOF.
void relay(UniqueFd a, UniqueFd b) {
  char buf[16384];
  bool a_open = true, b_open = true;
  while (a_open || b_open) {
    pollfd p[2] = {{a.get(), static_cast<short>(a_open ? POLLIN : 0), 0},
                   {b.get(), static_cast<short>(b_open ? POLLIN : 0), 0}};
    if (::poll(p, 2, 30000) <= 0) return;  // idle 30 s: give up
    for (int i = 0; i < 2; ++i) {
      if (!(p[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      int from = i == 0 ? a.get() : b.get(), to = i == 0 ? b.get() : a.get();
      ssize_t n = ::recv(from, buf, sizeof(buf), 0);
      if (n <= 0) {
        ::shutdown(to, SHUT_WR);
        (i == 0 ? a_open : b_open) = false;
        continue;
      }
      for (ssize_t off = 0; off < n;) {
        ssize_t w = ::send(to, buf + off, static_cast<std::size_t>(n - off), MSG_NOSIGNAL);
        if (w <= 0) return;
        off += w;
      }
    }
  }
}

struct EnrolledPod {
  PodUid uid;
  PodListeners listeners;
};

enum class Direction { Outbound, Inbound };

int runHarness(const HarnessOptions& opt) {
  auto pods_root = findPodsCgroupRoot(opt.cgroup_root);
  if (!pods_root) return std::fprintf(stderr, "capture-harness: %s\n", pods_root.error().describe().c_str()), 1;
  DatapathConfig config;
  config.pin_dir = opt.pin_dir;
  config.pods_cgroup_root = *pods_root;
  auto dp = Datapath::install(config);
  if (!dp) return std::fprintf(stderr, "capture-harness: %s\n", dp.error().describe().c_str()), 1;

  std::vector<PodCgroup> targets;
  if (opt.pods.empty()) {
    targets = listPodCgroups(opt.cgroup_root);
  } else {
    for (const std::string& uid : opt.pods) {
      auto dir = findPodCgroup(opt.cgroup_root, PodUid{uid});
      if (!dir) return std::fprintf(stderr, "capture-harness: %s\n", dir.error().describe().c_str()), 1;
      targets.push_back({PodUid{uid}, *dir});
    }
  }
  std::vector<std::unique_ptr<EnrolledPod>> pods;
  for (const PodCgroup& target : targets) {
    PodSpec spec;
    spec.uid = target.uid;
    spec.name = target.uid.value;
    spec.cgroup_dir = target.dir;
    spec.inbound_fail_closed = opt.strict;
    spec.excluded_outbound_ports = opt.excluded_outbound;
    spec.excluded_inbound_ports = opt.excluded_inbound;
    auto listeners = dp->enrollPod(spec);
    if (!listeners) return std::fprintf(stderr, "capture-harness: %s\n", listeners.error().describe().c_str()), 1;
    std::printf("enrolled %s cgroup=%s\n", target.uid.value.c_str(), target.dir.c_str());
    pods.push_back(std::make_unique<EnrolledPod>(EnrolledPod{target.uid, std::move(*listeners)}));
  }

  sigset_t mask;
  sigemptyset(&mask);
  sigaddset(&mask, SIGINT);
  sigaddset(&mask, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &mask, nullptr);
  UniqueFd sigfd(::signalfd(-1, &mask, SFD_CLOEXEC));

  struct Watch {
    int fd;
    EnrolledPod* pod;
    Direction direction;
  };
  std::vector<Watch> watches;
  for (auto& pod : pods) {
    for (int fd : {pod->listeners.outbound_v4.get(), pod->listeners.outbound_v6.get()})
      if (fd >= 0) watches.push_back({fd, pod.get(), Direction::Outbound});
    for (int fd : {pod->listeners.inbound_v4.get(), pod->listeners.inbound_v6.get()})
      if (fd >= 0) watches.push_back({fd, pod.get(), Direction::Inbound});
  }
  std::printf("ready\n");
  std::fflush(stdout);

  while (true) {
    std::vector<pollfd> pfds{{sigfd.get(), POLLIN, 0}};
    for (const Watch& w : watches) pfds.push_back({w.fd, POLLIN, 0});
    if (::poll(pfds.data(), pfds.size(), -1) < 0 && errno != EINTR) break;
    if (pfds[0].revents & POLLIN) break;
    for (std::size_t i = 1; i < pfds.size(); ++i) {
      if (!(pfds[i].revents & POLLIN)) continue;
      const Watch& w = watches[i - 1];
      UniqueFd client(::accept4(w.fd, nullptr, nullptr, SOCK_CLOEXEC));
      if (!client) continue;
      auto peer = SocketAddress::peerOf(client.get());
      Result<SocketAddress> target = fail("unset");
      if (w.direction == Direction::Outbound) {
        auto orig = dp->originalDestination(client.get());
        if (orig) target = orig->destination;
        else target = std::unexpected(orig.error());
      } else {
        target = SocketAddress::localOf(client.get());  // sk_lookup keeps the address
      }
      if (!target) {
        std::printf("error %s %s\n", w.pod->uid.value.c_str(), target.error().describe().c_str());
        std::fflush(stdout);
        continue;
      }
      std::printf("%s %s %s -> %s\n", w.direction == Direction::Outbound ? "outbound" : "inbound",
                  w.pod->uid.value.c_str(), peer ? peer->toString().c_str() : "?",
                  target->toString().c_str());
      std::fflush(stdout);
      // The agent's upstream leg, opened inside the pod's netns (in-pod model).
      int netns = w.pod->listeners.netns.get();
      std::thread([netns, target = *target, client = std::move(client)]() mutable {
        auto upstream = connectInNetns(netns, target);
        if (!upstream) return;
        relay(std::move(client), std::move(*upstream));
      }).detach();
    }
  }
  auto counters = dp->counters();
  if (counters) {
    for (std::size_t i = 0; i < counters->size(); ++i)
      std::printf("counter %s %llu\n", std::string(kCounterNames[i]).c_str(),
                  static_cast<unsigned long long>((*counters)[i]));
  }
  std::fflush(stdout);
  return 0;
}

const CommandRegistrar kHarness{{
    "capture-harness",
    "Capture pods and relay their connections in plaintext (test harness, no TLS, no policy)",
    [](CLI::App& sub) -> CommandAction {
      auto opt = std::make_shared<HarnessOptions>();
      sub.add_option("--cgroup-root", opt->cgroup_root,
                     "cgroup v2 dir holding kubepods.slice or kubepods")->required();
      sub.add_option("--pin-dir", opt->pin_dir, "bpffs pin directory of this agent")->capture_default_str();
      sub.add_option("--pod", opt->pods, "pod uid to enroll (default: every pod under the root)");
      sub.add_flag("--strict", opt->strict, "refuse inbound connections while no listener exists");
      sub.add_option("--exclude-outbound-port", opt->excluded_outbound, "never capture this destination port");
      sub.add_option("--exclude-inbound-port", opt->excluded_inbound, "never steer this inbound port");
      return [opt] { return runHarness(*opt); };
    },
}};

}  // namespace
