// Finding a pod on this node the way the kubelet lays it out: its cgroup
// under the cgroup v2 root (cgroupfs and systemd drivers, every QoS class)
// and its netns through a process in that cgroup.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "common/error.h"

namespace meshlock::capture {

struct PodUid {
  std::string value;  // as in metadata.uid, with dashes
  friend bool operator==(const PodUid&, const PodUid&) = default;
};

// Where a pod's cgroup may be, relative to the cgroup root, most likely
// first: systemd driver (kubepods.slice/...-pod<uid_with_underscores>.slice)
// then cgroupfs (kubepods/<qos>/pod<uid>); Guaranteed pods sit directly
// under kubepods.
[[nodiscard]] std::vector<std::filesystem::path> podCgroupCandidates(const PodUid& uid);

// The pod's cgroup directory under `cgroup_root` (the directory holding
// kubepods.slice or kubepods).
[[nodiscard]] Result<std::filesystem::path> findPodCgroup(const std::filesystem::path& cgroup_root,
                                                          const PodUid& uid);

// Every pod cgroup under `cgroup_root`, in either driver's layout, with the
// uid read back from the directory name.
struct PodCgroup {
  PodUid uid;
  std::filesystem::path dir;
};
[[nodiscard]] std::vector<PodCgroup> listPodCgroups(const std::filesystem::path& cgroup_root);

// The kubepods directory under `cgroup_root`: where the cgroup programs attach.
[[nodiscard]] Result<std::filesystem::path> findPodsCgroupRoot(
    const std::filesystem::path& cgroup_root);

// A process of the pod: the first pid in cgroup.procs of the pod cgroup or
// of any cgroup below it (the pause container's, normally).
[[nodiscard]] Result<pid_t> findPodProcess(const std::filesystem::path& pod_cgroup);

// /proc/<pid>/ns/net of a process of the pod.
[[nodiscard]] Result<std::filesystem::path> findPodNetns(const std::filesystem::path& pod_cgroup);

// The cgroup v2 id of a cgroup directory (what bpf_get_current_cgroup_id
// and its ancestors return).
[[nodiscard]] Result<std::uint64_t> cgroupId(const std::filesystem::path& cgroup_dir);

// Mount points of cgroup2 file systems listed in a /proc/self/mountinfo text.
[[nodiscard]] std::vector<std::filesystem::path> parseCgroup2Mounts(std::string_view mountinfo);

// The first cgroup2 mount of this process's mount namespace.
[[nodiscard]] Result<std::filesystem::path> findCgroup2Mount();

// The cgroup v2 path ("/a/b", relative to the hierarchy's root) in a
// /proc/<pid>/cgroup text; empty when it has no "0::" line.
[[nodiscard]] std::string parseCgroup2Path(std::string_view proc_cgroup);
// This process's cgroup v2 directory under the cgroup2 mount.
[[nodiscard]] Result<std::filesystem::path> ownCgroup2Dir();

}  // namespace meshlock::capture
