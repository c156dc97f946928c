// Watches a manifest directory with inotify (recursively) and applies changes
// within a second: events are debounced (a burst of writes is one reload),
// then the directory is reread. A file that turns bad keeps its last good
// contents and the error is reported with the update, so a running agent
// never loses state to a half-written file.
//
// Use either way:
//   - in an event loop: poll fd() for readability, then call poll(0ms);
//   - on a thread: run(stop_token, callback).
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <stop_token>
#include <vector>

#include "common/error.h"
#include "common/unique_fd.h"
#include "config/manifest.h"

namespace meshlock::config {

struct ManifestUpdate {
  ClusterState state;                 // everything in effect (last good per file)
  std::vector<ManifestError> errors;  // problems in the latest read of each file
  uint64_t generation = 0;            // 1 for the first load, +1 per applied change
};

class ManifestWatcher {
 public:
  struct Options {
    std::chrono::milliseconds debounce{100};  // quiet time after the last event before a reload
    SourceLimits limits;                      // what the directory may hold
  };

  // Loads `root` once and starts watching it. Fails if it cannot be read or watched.
  [[nodiscard]] static Result<std::unique_ptr<ManifestWatcher>> start(std::filesystem::path root,
                                                                       Options options);
  [[nodiscard]] static Result<std::unique_ptr<ManifestWatcher>> start(std::filesystem::path root) {
    return start(std::move(root), Options{});
  }

  // Readable when inotify has events; for an external event loop.
  [[nodiscard]] int fd() const { return inotify_.get(); }

  // Waits up to `timeout` for changes. Returns the new state once a change has
  // been applied, nullopt if nothing (yet) changed.
  [[nodiscard]] std::optional<ManifestUpdate> poll(std::chrono::milliseconds timeout);

  // Calls `on_update` for every applied change until `stop` is requested.
  void run(std::stop_token stop, const std::function<void(const ManifestUpdate&)>& on_update);

  [[nodiscard]] const ManifestUpdate& current() const { return current_; }

 private:
  ManifestWatcher(std::filesystem::path root, Options options, UniqueFd inotify)
      : root_(std::move(root)), options_(options), inotify_(std::move(inotify)), files_(options.limits) {}
  Status watchTree();
  bool drainEvents();  // true if any event was read
  void apply();

  std::filesystem::path root_;
  Options options_;
  UniqueFd inotify_;
  ManifestSet files_;
  ManifestUpdate current_;
  bool dirty_ = false;
  std::chrono::steady_clock::time_point last_event_{};
};

}  // namespace meshlock::config
