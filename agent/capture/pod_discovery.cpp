// Kubelet cgroup layout and process-to-netns lookup.
#include "capture/pod_discovery.h"

#include <fcntl.h>

#include <algorithm>
#include <cstring>
#include <deque>
#include <fstream>
#include <memory>
#include <sstream>
#include <system_error>

namespace meshlock::capture {

namespace fs = std::filesystem;

std::vector<fs::path> podCgroupCandidates(const PodUid& uid) {
  std::string underscored = uid.value;
  std::replace(underscored.begin(), underscored.end(), '-', '_');
  std::vector<fs::path> out;
  out.push_back(fs::path("kubepods.slice") / ("kubepods-pod" + underscored + ".slice"));
  for (const char* qos : {"burstable", "besteffort"}) {
    std::string q(qos);
    out.push_back(fs::path("kubepods.slice") / ("kubepods-" + q + ".slice") /
                  ("kubepods-" + q + "-pod" + underscored + ".slice"));
  }
  out.push_back(fs::path("kubepods") / ("pod" + uid.value));
  for (const char* qos : {"burstable", "besteffort"})
    out.push_back(fs::path("kubepods") / qos / ("pod" + uid.value));
  return out;
}

Result<fs::path> findPodCgroup(const fs::path& cgroup_root, const PodUid& uid) {
  if (uid.value.empty()) return fail("empty pod uid");
  if (uid.value.find('/') != std::string::npos || uid.value.find("..") != std::string::npos)
    return fail("pod uid '" + uid.value + "' is not a uid");
  std::error_code ec;
  for (const fs::path& candidate : podCgroupCandidates(uid)) {
    fs::path dir = cgroup_root / candidate;
    if (fs::is_directory(dir, ec)) return dir;
  }
  return fail("pod " + uid.value + ": no cgroup under " + cgroup_root.string() +
              " (looked for kubepods.slice/... and kubepods/...)");
}

std::vector<PodCgroup> listPodCgroups(const fs::path& cgroup_root) {
  std::vector<PodCgroup> out;
  std::error_code ec;
  auto scan = [&](const fs::path& dir) {
    for (const auto& entry : fs::directory_iterator(dir, ec)) {
      if (!entry.is_directory(ec)) continue;
      std::string name = entry.path().filename().string();
      // systemd: kubepods[-<qos>]-pod<uid_underscored>.slice
      auto pod = name.find("-pod");
      if (name.starts_with("kubepods") && pod != std::string::npos && name.ends_with(".slice")) {
        std::string uid = name.substr(pod + 4, name.size() - pod - 4 - 6);
        std::replace(uid.begin(), uid.end(), '_', '-');
        out.push_back({PodUid{uid}, entry.path()});
      } else if (name.starts_with("pod") && name.size() > 3) {  // cgroupfs: pod<uid>
        out.push_back({PodUid{name.substr(3)}, entry.path()});
      }
    }
  };
  for (const char* qos_parent : {"kubepods.slice", "kubepods"}) {
    fs::path top = cgroup_root / qos_parent;
    if (!fs::is_directory(top, ec)) continue;
    scan(top);
    for (const auto& entry : fs::directory_iterator(top, ec)) {
      std::string name = entry.path().filename().string();
      if (entry.is_directory(ec) && (name == "burstable" || name == "besteffort" ||
                                     name == "kubepods-burstable.slice" ||
                                     name == "kubepods-besteffort.slice"))
        scan(entry.path());
    }
  }
  return out;
}

Result<fs::path> findPodsCgroupRoot(const fs::path& cgroup_root) {
  std::error_code ec;
  for (const char* name : {"kubepods.slice", "kubepods"}) {
    if (fs::is_directory(cgroup_root / name, ec)) return cgroup_root / name;
  }
  return fail("no kubepods.slice or kubepods cgroup under " + cgroup_root.string());
}

Result<pid_t> findPodProcess(const fs::path& pod_cgroup) {
  std::deque<fs::path> pending{pod_cgroup};
  std::error_code ec;
  while (!pending.empty()) {
    fs::path dir = pending.front();
    pending.pop_front();
    std::ifstream procs(dir / "cgroup.procs");
    long pid = 0;
    if (procs >> pid && pid > 0) return static_cast<pid_t>(pid);
    for (const auto& entry : fs::directory_iterator(dir, ec)) {
      if (entry.is_directory(ec)) pending.push_back(entry.path());
    }
  }
  return fail("no process in pod cgroup " + pod_cgroup.string() + " or below it");
}

Result<fs::path> findPodNetns(const fs::path& pod_cgroup) {
  auto pid = findPodProcess(pod_cgroup);
  if (!pid) return std::unexpected(pid.error());
  return fs::path("/proc") / std::to_string(*pid) / "ns" / "net";
}

Result<std::uint64_t> cgroupId(const fs::path& cgroup_dir) {
  // cgroup2 exports its 64-bit id as the file handle (kernfs node id).
  struct {
    file_handle handle;
    std::uint64_t id;
  } buf{};
  buf.handle.handle_bytes = sizeof(std::uint64_t);
  int mount_id = 0;
  if (::name_to_handle_at(AT_FDCWD, cgroup_dir.c_str(), &buf.handle, &mount_id, 0) != 0)
    return failErrno("name_to_handle_at " + cgroup_dir.string());
  if (buf.handle.handle_bytes != sizeof(std::uint64_t))
    return fail(cgroup_dir.string() + " is not a cgroup v2 directory");
  std::uint64_t id;
  std::memcpy(&id, buf.handle.f_handle, sizeof(id));
  return id;
}

std::vector<fs::path> parseCgroup2Mounts(std::string_view mountinfo) {
  // "36 25 0:31 / /sys/fs/cgroup/unified rw,... shared:9 - cgroup2 cgroup2 rw"
  std::vector<fs::path> out;
  std::istringstream in{std::string(mountinfo)};
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::string id, parent, devno, root, mount_point, field;
    if (!(fields >> id >> parent >> devno >> root >> mount_point)) continue;
    while (fields >> field && field != "-") {
    }
    std::string fstype;
    if (fields >> fstype && fstype == "cgroup2") out.emplace_back(mount_point);
  }
  return out;
}

Result<fs::path> findCgroup2Mount() {
  std::ifstream in("/proc/self/mountinfo");
  if (!in) return failErrno("open /proc/self/mountinfo");
  std::stringstream text;
  text << in.rdbuf();
  auto mounts = parseCgroup2Mounts(text.str());
  if (mounts.empty()) return fail("no cgroup2 file system mounted");
  return mounts.front();
}

std::string parseCgroup2Path(std::string_view proc_cgroup) {
  std::istringstream in{std::string(proc_cgroup)};
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("0::", 0) == 0) return line.substr(3);
  return {};
}

Result<fs::path> ownCgroup2Dir() {
  auto mount = findCgroup2Mount();
  if (!mount) return std::unexpected(mount.error());
  std::ifstream in("/proc/self/cgroup");
  std::stringstream text;
  text << in.rdbuf();
  const std::string own = parseCgroup2Path(text.str());
  if (own.empty()) return fail("no cgroup v2 entry in /proc/self/cgroup");
  if (own == "/") return *mount;
  return *mount / fs::path(own).relative_path();
}

}  // namespace meshlock::capture
