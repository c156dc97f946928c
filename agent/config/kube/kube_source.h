// The cluster state from the Kubernetes API: one reflector (list + watch,
// informer semantics) per kind of resources.h, each on its own thread, into
// one store; poll() publishes the merged ClusterState, coalesced, only once
// every kind has been listed and only when something changed.
//
// A watch resumes from its last resourceVersion (bookmarks keep it fresh);
// 410 Gone relists and applies the difference; errors back off with jitter;
// a custom kind whose CRD is missing is listed-and-empty and looked for
// again; 401 rereads the token and retries once; 403 keeps the kind (and so
// the source) unsynced, and says so. Secrets are not watched: the few that
// credentialName settings name are read by name (status "secrets.referenced"),
// and so are the ConfigMaps of configmap:// names ("configmaps.referenced").
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "config/kube/endpoint.h"
#include "config/kube/resources.h"
#include "config/kube/transport.h"
#include "config/source.h"

namespace meshlock::config::kube {

// Exponential backoff with equal jitter: attempt n waits a random time in
// [d/2, d], d = min(max, initial * 2^n).
class Backoff {
 public:
  Backoff(std::chrono::milliseconds initial, std::chrono::milliseconds max, uint64_t seed);
  [[nodiscard]] std::chrono::milliseconds next();
  void reset() { attempt_ = 0; }

 private:
  std::chrono::milliseconds initial_;
  std::chrono::milliseconds max_;
  unsigned attempt_ = 0;
  std::mt19937_64 rng_;
};

struct KubeSourceOptions {
  std::string node_name;
  std::vector<ResourceKind> kinds = agentResourceKinds();
  std::chrono::milliseconds coalesce{100};      // an update waits for this much quiet after an event
  std::chrono::milliseconds coalesce_max{500};  // but is published at most this long after the first
  std::chrono::milliseconds backoff_initial{200};
  std::chrono::milliseconds backoff_max{30'000};
  std::chrono::milliseconds absent_retry{30'000};  // look again for a missing CRD
  // Each watch asks the server to end it after a random time in this range,
  // so the watches of many agents do not all reconnect together (client-go: 5-10 min).
  std::chrono::seconds watch_timeout_min{300};
  std::chrono::seconds watch_timeout_max{600};
  std::size_t max_objects = SourceLimits{}.max_objects;  // setting maxSourceObjects
  unsigned page_limit = 500;  // for lists the server pages (relists; the first list at resourceVersion=0 is one answer)
  // The Secrets a DestinationRule's credentialName names for this node's pods
  // (config/credentials.h) are read one by one (GET, never a list or watch of
  // every Secret), again each `secret_refresh` and whenever the set changes.
  std::chrono::milliseconds secret_refresh{30'000};
  std::string origin;  // for status: how the endpoint was found
};

class KubeSource final : public ClusterSource {
 public:
  [[nodiscard]] static std::unique_ptr<KubeSource> start(std::shared_ptr<TransportFactory> transports,
                                                         std::shared_ptr<BearerToken> token,
                                                         KubeSourceOptions options);
  ~KubeSource() override;
  KubeSource(const KubeSource&) = delete;
  KubeSource& operator=(const KubeSource&) = delete;

  [[nodiscard]] std::optional<ClusterUpdate> initial(std::chrono::milliseconds wait) override { return poll(wait); }
  [[nodiscard]] std::optional<ClusterUpdate> poll(std::chrono::milliseconds timeout) override;
  [[nodiscard]] SourceStatus status() const override;

  struct Shared;  // the store and what the reflector threads share (kube_source.cpp)

 private:
  explicit KubeSource(std::shared_ptr<Shared> shared) : shared_(std::move(shared)) {}
  std::shared_ptr<Shared> shared_;
  uint64_t published_changes_ = 0;
  uint64_t generation_ = 0;
};

}  // namespace meshlock::config::kube
