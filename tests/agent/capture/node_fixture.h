// A tiny node for the capture end-to-end tests, used until meshsim is in the
// tree: a cgroup v2 kubepods tree of its own, pods as netns + a veth to a
// peer netns, processes "in the pod" as forked children, and a pin dir of
// its own. Every name carries a unique tag, and the destructor removes
// everything even when the test failed.
#pragma once

#include <sched.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <deque>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include "capture/datapath.h"
#include "capture/netns.h"
#include "capture/pod_discovery.h"
#include "common/unique_fd.h"

namespace meshlock::capture::testing {

namespace fs = std::filesystem;

inline std::string uniqueTag() {
  static std::atomic<int> counter{0};
  return "t" + std::to_string(::getpid()) + "x" + std::to_string(counter++);
}

inline bool run(const std::string& command) {
  return std::system((command + " >/dev/null 2>&1").c_str()) == 0;
}

// One pod: its netns ("<tag>p<n>") joined by a veth to a peer netns
// ("<tag>q<n>") that plays another node; pod IP 10.77.<n>.1 and
// fd00:77:<n>::1, peer .2 and ::2.
struct FakePod {
  PodUid uid;
  std::string netns_name, peer_netns_name;
  fs::path pod_cgroup, container_cgroup;
  std::string ip, peer_ip;
  std::string ip6, peer_ip6;
  UniqueFd netns, peer_netns;
};

class FakeNode {
 public:
  FakeNode() : tag_(uniqueTag()) {
    auto mount = findCgroup2Mount();
    if (!mount) {
      error_ = mount.error().describe();
      return;
    }
    cgroup_top_ = *mount / ("meshlock-" + tag_);
    pods_root_ = cgroup_top_ / "kubepods";
    fs::create_directories(pods_root_ / "burstable");
    pin_dir_ = fs::path("/sys/fs/bpf") / ("meshlock-" + tag_);
  }
  ~FakeNode() {
    (void)Datapath::uninstall(pin_dir_);
    for (FakePod& pod : pods_) {
      run("ip netns del " + pod.netns_name);
      run("ip netns del " + pod.peer_netns_name);
    }
    std::error_code ec;
    if (!cgroup_top_.empty()) {
      std::vector<fs::path> dirs;
      for (auto it = fs::recursive_directory_iterator(cgroup_top_, ec);
           it != fs::recursive_directory_iterator(); it.increment(ec)) {
        if (it->is_directory(ec)) dirs.push_back(it->path());
      }
      std::sort(dirs.begin(), dirs.end(),
                [](const fs::path& a, const fs::path& b) { return a.string().size() > b.string().size(); });
      for (const fs::path& d : dirs) ::rmdir(d.c_str());
      ::rmdir(cgroup_top_.c_str());
    }
  }
  FakeNode(const FakeNode&) = delete;
  FakeNode& operator=(const FakeNode&) = delete;

  const std::string& error() const { return error_; }
  const fs::path& podsRoot() const { return pods_root_; }
  const fs::path& cgroupTop() const { return cgroup_top_; }
  const fs::path& pinDir() const { return pin_dir_; }

  DatapathConfig config() const {
    DatapathConfig c;
    c.pin_dir = pin_dir_;
    c.pods_cgroup_root = pods_root_;
    return c;
  }

  // A burstable pod (kubepods/burstable/pod<uid>/ctr) with its netns.
  FakePod& addPod() {
    int n = static_cast<int>(pods_.size());
    FakePod& pod = pods_.emplace_back();
    pod.uid.value = "0000" + tag_ + "-" + std::to_string(n);
    pod.netns_name = "ml" + tag_ + "p" + std::to_string(n);
    pod.peer_netns_name = "ml" + tag_ + "q" + std::to_string(n);
    pod.pod_cgroup = pods_root_ / "burstable" / ("pod" + pod.uid.value);
    pod.container_cgroup = pod.pod_cgroup / "ctr";
    fs::create_directories(pod.container_cgroup);
    pod.ip = "10.77." + std::to_string(n) + ".1";
    pod.peer_ip = "10.77." + std::to_string(n) + ".2";
    pod.ip6 = "fd00:77:" + std::to_string(n) + "::1";
    pod.peer_ip6 = "fd00:77:" + std::to_string(n) + "::2";
    bool ok = run("ip netns add " + pod.netns_name) && run("ip netns add " + pod.peer_netns_name) &&
              run("ip -n " + pod.netns_name + " link set lo up") &&
              run("ip -n " + pod.peer_netns_name + " link set lo up") &&
              run("ip -n " + pod.netns_name + " link add eth0 type veth peer name eth0 netns " +
                  pod.peer_netns_name) &&
              run("ip -n " + pod.netns_name + " addr add " + pod.ip + "/24 dev eth0") &&
              run("ip -n " + pod.peer_netns_name + " addr add " + pod.peer_ip + "/24 dev eth0") &&
              run("ip -n " + pod.netns_name + " -6 addr add " + pod.ip6 + "/64 dev eth0 nodad") &&
              run("ip -n " + pod.peer_netns_name + " -6 addr add " + pod.peer_ip6 + "/64 dev eth0 nodad") &&
              run("ip -n " + pod.netns_name + " link set eth0 up") &&
              run("ip -n " + pod.peer_netns_name + " link set eth0 up");
    if (!ok) error_ = "creating netns for pod " + pod.uid.value + " failed";
    auto ns = openNetns("/run/netns/" + pod.netns_name);
    if (ns) pod.netns = std::move(*ns);
    auto peer = openNetns("/run/netns/" + pod.peer_netns_name);
    if (peer) pod.peer_netns = std::move(*peer);
    return pod;
  }

  PodSpec specFor(const FakePod& pod) const {
    PodSpec spec;
    spec.uid = pod.uid;
    spec.name = "test/" + pod.uid.value;
    spec.cgroup_dir = pod.pod_cgroup;
    spec.netns_path = "/run/netns/" + pod.netns_name;
    spec.addresses = {*IpAddress::parse(pod.ip), *IpAddress::parse(pod.ip6)};
    return spec;
  }

 private:
  std::string tag_;
  std::string error_;
  fs::path cgroup_top_, pods_root_, pin_dir_;
  std::deque<FakePod> pods_;  // a deque: references to pods stay valid
};

// Runs `fn` in a forked child that joined `cgroup` and the netns `netns_fd`:
// a process of the pod. Returns the child's exit code (fn's return value).
inline int runAsPodProcess(const fs::path& cgroup, int netns_fd, const std::function<int()>& fn) {
  pid_t pid = ::fork();
  if (pid == 0) {
    {
      std::ofstream procs(cgroup / "cgroup.procs");
      procs << ::getpid() << std::flush;
      if (!procs) ::_exit(120);
    }
    if (::setns(netns_fd, CLONE_NEWNET) != 0) ::_exit(121);
    ::_exit(fn());
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

}  // namespace meshlock::capture::testing
