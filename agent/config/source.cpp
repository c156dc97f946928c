// ManifestSource, and the status line both sources share.
#include "config/source.h"

namespace meshlock::config {

std::string SourceStatus::summary() const {
  std::string s = kind + " " + server + ": " + (synced ? "synced" : "not synced");
  if (kind == "kubernetes") {
    s += connected ? ", connected" : ", disconnected";
    if (!connected) s += ", data " + std::to_string(static_cast<long long>(staleness_seconds)) + "s old";
    std::size_t listed = 0;
    std::string problems;
    for (const SourceKindStatus& k : kinds) {
      if (k.listed) ++listed;
      if (k.state == "forbidden" || k.state == "unauthorized" || k.state == "failing" || k.state == "waiting" ||
          k.state == "capped") {
        problems += (problems.empty() ? "" : ", ") + k.name + " " + k.state;
      }
    }
    s += ", " + std::to_string(listed) + "/" + std::to_string(kinds.size()) + " kinds listed";
    if (!problems.empty()) s += " (" + problems + ")";
  }
  return s;
}

Result<std::unique_ptr<ManifestSource>> ManifestSource::start(std::filesystem::path root, SourceLimits limits) {
  auto watcher = ManifestWatcher::start(root, ManifestWatcher::Options{.limits = limits});
  if (!watcher) return std::unexpected(watcher.error());
  return std::unique_ptr<ManifestSource>(new ManifestSource(std::move(root), std::move(*watcher)));
}

std::optional<ClusterUpdate> ManifestSource::poll(std::chrono::milliseconds timeout) {
  auto update = watcher_->poll(timeout);
  if (update) last_change_ = std::chrono::steady_clock::now();
  return update;
}

SourceStatus ManifestSource::status() const {
  SourceStatus s;
  s.kind = "manifests";
  s.server = root_.string();
  s.origin = "--manifests";
  s.synced = true;
  s.connected = true;
  return s;
}

}  // namespace meshlock::config
