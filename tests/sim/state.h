// A run's state on disk: /run/meshsim/<run>/state.json (written before any
// resource is created, so `down` can always clean up), a lock per run, the
// choice of run for commands without --name, and the mounts meshsim made.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "common/error.h"
#include "common/unique_fd.h"
#include "layout.h"

namespace meshsim {

// creating: up is (or was, if it crashed) building; ready: built;
// deleting: down is (or was) tearing it down.
inline constexpr std::string_view kPhaseCreating = "creating";
inline constexpr std::string_view kPhaseReady = "ready";
inline constexpr std::string_view kPhaseDeleting = "deleting";

struct RunState {
  Layout layout;
  std::string phase;
};

[[nodiscard]] std::string stateFile(std::string_view run);
[[nodiscard]] meshlock::Status saveState(const Layout& layout, std::string_view phase);
[[nodiscard]] meshlock::Result<RunState> loadState(std::string_view run);

// Runs with a state directory, sorted.
[[nodiscard]] std::vector<std::string> listRuns();
// Runs that left anything behind (state dir, netns or cgroup), for `down --all`.
[[nodiscard]] std::vector<std::string> listRunsWithLeftovers();

// --name, else $MESHSIM_NAME, else the only run; errors say which runs exist.
[[nodiscard]] meshlock::Result<std::string> resolveRun(const std::string& nameOption);

// An exclusive flock held for the object's lifetime.
class FileLock {
 public:
  [[nodiscard]] static meshlock::Result<FileLock> acquire(const std::string& path);
  void release() { fd_.reset(); }

 private:
  explicit FileLock(meshlock::UniqueFd fd) : fd_(std::move(fd)) {}
  meshlock::UniqueFd fd_;
};
[[nodiscard]] meshlock::Result<FileLock> lockRun(std::string_view run);
[[nodiscard]] meshlock::Result<FileLock> lockGlobal();

// Mounts meshsim made (so it never unmounts one it did not make).
[[nodiscard]] std::vector<std::string> madeMounts();
[[nodiscard]] meshlock::Status recordMount(const std::string& path, bool made);

}  // namespace meshsim
