// The operating system as meshsim uses it: running ip/nft, files written
// atomically, mounts, cgroup v2 directories and processes. Every call returns
// a Result naming what it touched.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include "common/error.h"

namespace meshsim {

// Runs argv (no shell) with `input` on stdin; fails with the tool's stderr.
// Killed after `timeout`, so a hung tool cannot hang meshsim.
[[nodiscard]] meshlock::Result<std::string> runTool(const std::vector<std::string>& argv, std::string_view input = {},
                                                    std::chrono::seconds timeout = std::chrono::seconds(30));

[[nodiscard]] meshlock::Result<std::string> readFile(const std::string& path);
// Writes a temporary file beside `path`, then renames it over `path`.
[[nodiscard]] meshlock::Status writeFileAtomic(const std::string& path, std::string_view content, mode_t mode = 0644);
[[nodiscard]] meshlock::Status makeDirs(const std::string& path, mode_t mode = 0755);
[[nodiscard]] bool pathExists(const std::string& path);
[[nodiscard]] std::vector<std::string> listDir(const std::string& path);  // names, without . and ..
// Removes a directory holding only plain files (an /etc/netns/<name> entry).
[[nodiscard]] meshlock::Status removeFlatDir(const std::string& path);

struct MountEntry {
  std::string mountPoint;
  std::string fsType;
};
[[nodiscard]] std::vector<MountEntry> mounts();

// The cgroup v2 hierarchy: /sys/fs/cgroup if it is v2, else any cgroup2 mount
// (on these machines /sys/fs/cgroup/unified), else none.
[[nodiscard]] std::optional<std::string> findCgroup2();
[[nodiscard]] bool isBpffsMounted(const std::string& path);
[[nodiscard]] meshlock::Status mountFs(const std::string& fsType, const std::string& path);
[[nodiscard]] meshlock::Status unmountFs(const std::string& path);

// Moves the calling process into a cgroup v2 directory.
[[nodiscard]] meshlock::Status joinCgroup(const std::string& cgroupDir);
// Kills every process in a cgroup subtree (cgroup.kill) and waits until it is empty.
[[nodiscard]] meshlock::Status killCgroupTree(const std::string& cgroupDir, std::chrono::milliseconds timeout);
// rmdir's the subtree, deepest first.
[[nodiscard]] meshlock::Status removeCgroupTree(const std::string& cgroupDir);

[[nodiscard]] std::string processCmdline(pid_t pid);  // NULs replaced by spaces; empty if gone
[[nodiscard]] bool processAlive(pid_t pid);
// Processes whose network namespace is the one mounted at `netnsPath`.
[[nodiscard]] std::vector<pid_t> processesInNetns(const std::string& netnsPath);

}  // namespace meshsim
