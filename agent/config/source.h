// Where the agent's cluster state comes from: a manifest directory
// (ManifestSource) or the Kubernetes API (kube::KubeSource). The composition
// root picks one and reads updates from it; nothing else knows which.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "config/watcher.h"

namespace meshlock::config {

// One applied change: everything in effect, the problems of the latest read.
using ClusterUpdate = ManifestUpdate;

// What one kind of object (a watch) is doing; for /status and metrics.
struct SourceKindStatus {
  std::string name;         // "pods.local", "peerauthentications", ...
  std::string api_version;  // the group/version listed ("security.istio.io/v1"); empty until discovered
  std::string state;        // waiting | listed | absent | reconnecting | forbidden | unauthorized | capped | failing
  bool listed = false;      // its first list was applied (absent counts: listed and empty)
  bool connected = false;   // its watch is open (absent kinds count as connected)
  std::string resource_version;
  std::optional<double> last_event_age_seconds;
  std::size_t objects = 0;
  std::string last_error;
  uint64_t errors = 0;      // failed requests and malformed objects
  uint64_t relists = 0;     // lists after the first (410 Gone, reconnect without a resourceVersion)
  uint64_t reconnects = 0;  // watches opened again after an error
  std::map<std::string, uint64_t> events;  // by type: ADDED, MODIFIED, DELETED, BOOKMARK, ERROR
};

struct SourceStatus {
  std::string kind;    // "manifests" or "kubernetes"
  std::string server;  // manifest directory, or API server URL
  std::string origin;  // how the server was found (kubeconfig file and context, in-cluster)
  bool synced = false;     // every kind listed once and the state published
  bool connected = false;  // every watch open
  // Seconds since the data was last known current (0 while every watch is open).
  double staleness_seconds = 0;
  std::vector<SourceKindStatus> kinds;
  [[nodiscard]] std::string summary() const;  // one line: "kubernetes https://…: synced, connected, 13 kinds"
};

class ClusterSource {
 public:
  virtual ~ClusterSource() = default;
  // The first full state (generation 1), waiting up to `wait` for it;
  // nullopt if the source is not synced by then (poll() brings it later).
  [[nodiscard]] virtual std::optional<ClusterUpdate> initial(std::chrono::milliseconds wait) = 0;
  // Waits up to `timeout` for a change; returns it once applied (never an
  // update that changes nothing, never one before the first full sync).
  [[nodiscard]] virtual std::optional<ClusterUpdate> poll(std::chrono::milliseconds timeout) = 0;
  [[nodiscard]] virtual SourceStatus status() const = 0;
};

// The manifest directory, watched with inotify; synced from the start.
class ManifestSource final : public ClusterSource {
 public:
  [[nodiscard]] static Result<std::unique_ptr<ManifestSource>> start(std::filesystem::path root,
                                                                      SourceLimits limits = {});
  // The directory's contents at start-up (generation 1); poll() returns later changes.
  [[nodiscard]] std::optional<ClusterUpdate> initial(std::chrono::milliseconds) override {
    return watcher_->current();
  }
  [[nodiscard]] std::optional<ClusterUpdate> poll(std::chrono::milliseconds timeout) override;
  [[nodiscard]] SourceStatus status() const override;

 private:
  ManifestSource(std::filesystem::path root, std::unique_ptr<ManifestWatcher> watcher)
      : root_(std::move(root)), watcher_(std::move(watcher)) {}
  std::filesystem::path root_;
  std::unique_ptr<ManifestWatcher> watcher_;
  std::chrono::steady_clock::time_point last_change_ = std::chrono::steady_clock::now();
};

}  // namespace meshlock::config
