// Builds and tears down a run (see cluster.h).
#include "cluster.h"

#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fmt/format.h>
#include <set>

#include "common/unique_fd.h"
#include "render.h"
#include "state.h"
#include "system.h"

namespace meshsim {

using meshlock::Error;
using meshlock::fail;
using meshlock::failErrno;
using meshlock::Result;
using meshlock::Status;
using meshlock::UniqueFd;

namespace {

constexpr std::string_view kBpffs = "/sys/fs/bpf";
// Hidden name: never mistaken for a run directory.
const std::string kOwnCgroup2 = std::string(kStateRoot) + "/.cgroup2";

Status ipBatch(const std::string& netns, const std::string& commands) {
  auto out = runTool({"ip", "-n", netns, "-batch", "-"}, commands);
  if (!out) return std::unexpected(out.error().context("netns " + netns));
  return {};
}

Status inNetns(const std::string& netns, std::vector<std::string> argv, std::string_view input = {}) {
  argv.insert(argv.begin(), {"ip", "netns", "exec", netns});
  auto out = runTool(argv, input);
  if (!out) return std::unexpected(out.error().context("netns " + netns));
  return {};
}

// Starts the pod's pause process: its own session, in the pod's netns and
// container cgroup, detached from us (double fork) so it outlives `up`.
Result<pid_t> startPause(const PodLayout& pod) {
  int pipefd[2];
  if (pipe2(pipefd, O_CLOEXEC) != 0) return failErrno("pipe");
  UniqueFd readEnd(pipefd[0]), writeEnd(pipefd[1]);
  pid_t middle = fork();
  if (middle < 0) return failErrno("fork");
  if (middle == 0) {
    setsid();
    pid_t pause = fork();
    if (pause != 0) {
      int report = pause;
      if (write(writeEnd.get(), &report, sizeof report) < 0) _exit(1);
      _exit(0);
    }
    auto die = [&](const std::string& what) {
      std::string msg = what + ": " + std::strerror(errno);
      if (write(writeEnd.get(), msg.data(), msg.size()) < 0) _exit(127);
      _exit(127);
    };
    int ns = open(pod.netnsPath().c_str(), O_RDONLY | O_CLOEXEC);
    if (ns < 0 || setns(ns, CLONE_NEWNET) != 0) die("setns " + pod.netnsPath());
    close(ns);
    if (!joinCgroup(pod.containerCgroup)) die("join cgroup " + pod.containerCgroup);
    signal(SIGPIPE, SIG_DFL);
    int devnull = open("/dev/null", O_RDWR);
    if (devnull < 0) die("open /dev/null");
    dup2(devnull, 0);
    dup2(devnull, 1);
    dup2(devnull, 2);
    if (chdir("/") != 0) die("chdir /");
    execl("/proc/self/exe", "meshsim", "pause", pod.netns.c_str(), static_cast<char*>(nullptr));
    die("exec /proc/self/exe");
  }
  writeEnd.reset();
  int status = 0;
  while (waitpid(middle, &status, 0) < 0 && errno == EINTR) {
  }
  int pid = 0;
  std::string message;
  char buf[512];
  bool gotPid = false;
  // The pipe closes when the pause process execs (O_CLOEXEC) or dies.
  while (true) {
    ssize_t n = read(readEnd.get(), buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    size_t off = 0;
    if (!gotPid && static_cast<size_t>(n) >= sizeof pid) {
      std::memcpy(&pid, buf, sizeof pid);
      gotPid = true;
      off = sizeof pid;
    }
    message.append(buf + off, static_cast<size_t>(n) - off);
  }
  if (!gotPid || pid <= 0) return fail("pause process for " + pod.key() + " did not start");
  if (!message.empty()) return fail("pause process for " + pod.key() + ": " + message);
  return pid;
}

// The kernel's preloaded iterators (CONFIG_BPF_PRELOAD) are not pins.
bool bpffsEmpty(const std::string& path) {
  for (const auto& name : listDir(path))
    if (name != "maps.debug" && name != "progs.debug") return false;
  return true;
}

std::string prefixLen(const NodeLayout& node) { return std::to_string(node.podCidr.prefix); }

}  // namespace

Result<std::string> ensureMounts() {
  std::string cgroup2;
  if (auto found = findCgroup2()) {
    cgroup2 = *found;
    std::printf("cgroup2: %s (already mounted)\n", cgroup2.c_str());
  } else {
    if (auto st = recordMount(kOwnCgroup2, true); !st) return std::unexpected(st.error());
    if (auto st = mountFs("cgroup2", kOwnCgroup2); !st) {
      (void)recordMount(kOwnCgroup2, false);
      return std::unexpected(st.error());
    }
    cgroup2 = kOwnCgroup2;
    std::printf("cgroup2: %s (mounted by meshsim)\n", cgroup2.c_str());
  }
  std::string bpffs(kBpffs);
  if (isBpffsMounted(bpffs)) {
    std::printf("bpffs: %s (already mounted)\n", bpffs.c_str());
  } else {
    if (auto st = recordMount(bpffs, true); !st) return std::unexpected(st.error());
    if (auto st = mountFs("bpf", bpffs); !st) {
      (void)recordMount(bpffs, false);
      return std::unexpected(st.error());
    }
    std::printf("bpffs: %s (mounted by meshsim)\n", bpffs.c_str());
  }
  std::fflush(stdout);
  return cgroup2;
}

Status buildRun(Layout& layout) {
  // Namespaces first: the veths are created straight into them, so no
  // interface ever appears in the host's namespace.
  std::vector<std::string> names{layout.fabricNetns};
  for (const auto& n : layout.nodes) names.push_back(n.netns);
  for (const auto& p : layout.pods) names.push_back(p.netns);
  if (auto st = makeDirs(std::string(kNetnsDir)); !st) return st;
  for (const auto& name : names) {
    if (pathExists(std::string(kNetnsDir) + "/" + name)) return fail("netns " + name + " already exists");
    if (auto out = runTool({"ip", "netns", "add", name}); !out) return std::unexpected(out.error());
  }

  // br0 holds 172.18.0.1 (the first fabric address; nodes start at .2): the run's
  // API server listens there for agents in node netns.
  std::string fabric = fmt::format("link set lo up\nlink add {0} type bridge\naddr add {1}/{2} dev {0}\nlink set {0} up\n",
                                   kFabricBridge, kApiServerFabricIp, kFabricCidr.prefix);
  if (auto st = ipBatch(layout.fabricNetns, fabric); !st) return st;

  for (const auto& node : layout.nodes) {
    std::string cmds = fmt::format(
        "link set lo up\nlink add {0} type bridge\naddr add {1}/{2} dev {0}\nlink set {0} up\n"
        "link add {3} type veth peer name {4} netns {5}\naddr add {6}/{7} dev {3}\nlink set {3} up\n",
        kNodeBridge, node.bridgeIp.str(), prefixLen(node), kNodeUplink, node.fabricVeth, layout.fabricNetns,
        node.nodeIp.str(), kFabricCidr.prefix);
    for (const auto& other : layout.nodes) {
      if (other.name != node.name)
        cmds += fmt::format("route add {} via {} dev {}\n", other.podCidr.str(), other.nodeIp.str(), kNodeUplink);
    }
    for (const auto& pod : layout.pods) {
      if (pod.node != node.name) continue;
      cmds += fmt::format("link add {0} type veth peer name {1} netns {2}\nlink set {0} master {3}\n"
                          "link set {0} type bridge_slave hairpin on\nlink set {0} up\n",
                          pod.hostVeth, kPodInterface, pod.netns, kNodeBridge);
    }
    if (auto st = ipBatch(node.netns, cmds); !st) return st;
    if (auto st = ipBatch(layout.fabricNetns, fmt::format("link set {0} master {1}\nlink set {0} up\n",
                                                          node.fabricVeth, kFabricBridge));
        !st)
      return st;
    // Nodes route between pods; bridged traffic must pass netfilter so that a
    // ClusterIP reply from a pod on the same bridge is un-DNATed (as with
    // kube-proxy's br_netfilter requirement).
    if (auto st = inNetns(node.netns, {"sysctl", "-qw", "net.ipv4.ip_forward=1"}); !st) return st;
    if (pathExists("/proc/sys/net/bridge/bridge-nf-call-iptables")) {
      if (auto st = inNetns(node.netns, {"sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=1"}); !st) return st;
    }
  }

  for (const auto& pod : layout.pods) {
    const NodeLayout& node = *layout.findNode(pod.node);
    std::string cmds = fmt::format(
        "link set lo up\naddr add {0}/{1} dev {2}\nlink set {2} up\nroute add default via {3} dev {2}\n", pod.ip.str(),
        prefixLen(node), kPodInterface, node.bridgeIp.str());
    if (auto st = ipBatch(pod.netns, cmds); !st) return st;
  }

  for (const auto& node : layout.nodes) {
    if (auto st = makeDirs(node.cgroupRoot); !st) return st;
  }
  for (const auto& pod : layout.pods) {
    if (auto st = makeDirs(pod.containerCgroup); !st) return st;
  }
  if (auto st = publishServices(layout); !st) return st;
  if (auto st = publishManifests(layout); !st) return st;

  // Pause pids are saved once at the end: a pause started before a crash is
  // still found and killed through its cgroup.
  for (auto& pod : layout.pods) {
    auto pid = startPause(pod);
    if (!pid) {
      (void)saveState(layout, kPhaseCreating);
      return std::unexpected(pid.error());
    }
    pod.pausePid = *pid;
  }
  return saveState(layout, kPhaseCreating);
}

Status publishServices(const Layout& layout) {
  std::string ruleset = renderNftRuleset(layout);
  for (const auto& node : layout.nodes) {
    if (auto st = inNetns(node.netns, {"nft", "-f", "-"}, ruleset); !st) return st;
  }
  for (const auto& pod : layout.pods) {
    std::string dir = "/etc/netns/" + pod.netns;
    if (auto st = makeDirs(dir); !st) return st;
    if (auto st = writeFileAtomic(dir + "/hosts", renderHosts(layout, pod)); !st) return st;
    if (auto st = writeFileAtomic(dir + "/resolv.conf", renderResolvConf(pod)); !st) return st;
  }
  return {};
}

Status publishManifests(const Layout& layout) {
  std::string dir = layout.manifestDir();
  if (auto st = makeDirs(dir); !st) return st;
  auto files = renderManifests(layout);
  for (const auto& [name, text] : files) {
    if (auto st = writeFileAtomic(dir + "/" + name, text); !st) return st;
  }
  for (const auto& name : listDir(dir)) {
    if (name.ends_with(".yaml") && !files.contains(name)) {
      std::string path = dir + "/" + name;
      if (unlink(path.c_str()) != 0 && errno != ENOENT) return failErrno("unlink " + path);
    }
  }
  return {};
}

Status teardownRun(const std::string& run, const Layout* layout) {
  std::vector<Error> errors;
  auto note = [&](Status st) {
    if (!st) errors.push_back(st.error());
  };
  std::string prefix = netnsPrefix(run);

  // 1. Processes: the recorded pause pids (checked against their command
  //    line, in case the pid was reused), then whatever runs in our cgroups.
  std::set<std::string> cgroupRoots;
  if (layout) {
    cgroupRoots.insert(layout->runCgroup);
    for (const auto& pod : layout->pods) {
      if (pod.pausePid > 0 && processCmdline(pod.pausePid) == "meshsim pause " + pod.netns)
        kill(pod.pausePid, SIGKILL);
    }
  }
  if (auto cg = findCgroup2()) cgroupRoots.insert(*cg + "/meshsim-" + run);
  for (const auto& root : cgroupRoots) note(killCgroupTree(root, std::chrono::seconds(5)));

  // 2. Network namespaces (their veths, bridges and nft tables go with them).
  for (const auto& name : listDir(std::string(kNetnsDir))) {
    if (!name.starts_with(prefix)) continue;
    std::string path = std::string(kNetnsDir) + "/" + name;
    if (auto pids = processesInNetns(path); !pids.empty()) {
      std::string list;
      for (pid_t p : pids) list += " " + std::to_string(p);
      std::fprintf(stderr,
                   "meshsim: warning: processes not started by meshsim still use netns %s (pids%s); it lives on until "
                   "they exit\n",
                   name.c_str(), list.c_str());
    }
    if (auto out = runTool({"ip", "netns", "del", name}); !out) note(std::unexpected(out.error()));
  }

  // 3. Name resolution files.
  for (const auto& name : listDir("/etc/netns")) {
    if (name.starts_with(prefix)) note(removeFlatDir("/etc/netns/" + name));
  }

  // 4. Cgroups, deepest first.
  for (const auto& root : cgroupRoots) note(removeCgroupTree(root));

  // 5. State and manifests.
  std::error_code ec;
  std::filesystem::remove_all(std::string(kStateRoot) + "/" + run, ec);
  if (ec) errors.push_back(Error{"remove " + std::string(kStateRoot) + "/" + run, ec.value()});

  // 6. The mounts meshsim made, once no run needs them (and bpffs only when
  //    nothing is pinned in it).
  if (auto lock = lockGlobal(); lock) {
    if (listRunsWithLeftovers().empty()) {
      // up created /etc/netns if it was missing; an empty one is ours to remove.
      if (rmdir("/etc/netns") == 0) std::printf("removed empty /etc/netns\n");
      for (const auto& path : madeMounts()) {
        bool mountedHere = false;
        for (const auto& m : mounts())
          if (m.mountPoint == path) mountedHere = true;
        if (!mountedHere) {
          note(recordMount(path, false));
          continue;
        }
        if (path == kBpffs && !bpffsEmpty(path)) {
          std::fprintf(stderr, "meshsim: leaving %s mounted: it holds pinned objects\n", path.c_str());
          continue;
        }
        if (auto st = unmountFs(path); st) {
          std::printf("unmounted %s (mounted by meshsim)\n", path.c_str());
          if (path == kOwnCgroup2) rmdir(path.c_str());
          note(recordMount(path, false));
        } else {
          note(st);
        }
      }
    }
  } else {
    errors.push_back(lock.error());
  }

  if (errors.empty()) return {};
  std::string all;
  for (const auto& e : errors) all += (all.empty() ? "" : "; ") + e.describe();
  return fail("run " + run + ": cleanup incomplete: " + all);
}

void pauseForever() {
  struct sigaction sa {};
  sa.sa_handler = [](int) { _exit(0); };
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGINT, &sa, nullptr);
  signal(SIGHUP, SIG_IGN);
  signal(SIGPIPE, SIG_IGN);
  while (true) pause();
}

}  // namespace meshsim
