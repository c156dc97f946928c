// An in-memory Kubernetes API for the reflector tests: collections with
// resourceVersions and a watch history, paged lists, field selectors on
// spec.nodeName, discovery documents, forced statuses. It speaks the
// protocol of k8s.io/apiserver (list metadata.continue/resourceVersion,
// watch events one JSON object per line, BOOKMARK, ERROR with a Status).
#pragma once

#include <chrono>
#include <condition_variable>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "config/kube/transport.h"

namespace meshlock::config::kube::testing {

using nlohmann::json;

class FakeApi final : public TransportFactory, public std::enable_shared_from_this<FakeApi> {
 public:
  struct Event {
    int64_t rv;
    std::string type;
    json object;
    json previous;  // the version before a MODIFIED, for selector moves
  };
  struct Collection {
    std::map<std::string, json> objects;  // by ns/name
    std::vector<Event> history;
  };

  // Makes `group` discoverable with these versions (first = preferred).
  void serveGroup(const std::string& group, std::vector<std::string> versions);
  void removeGroup(const std::string& group);
  // Adds or replaces an object in the collection at `path` ("/api/v1/pods").
  void put(const std::string& path, json object);
  void remove(const std::string& path, const std::string& ns, const std::string& name);
  void bookmark(const std::string& path);
  // Every open watch (and the next ones) on `path` gets ERROR 410 and ends.
  void expireWatches(const std::string& path);
  // Ends every open watch normally, as timeoutSeconds does.
  void closeWatches();
  // A status for every request whose path starts with `prefix` (0: none).
  void forceStatus(const std::string& prefix, int status);
  // Only requests carrying this bearer token are allowed (empty: any).
  void requireToken(std::string token);
  void expireNextContinue() { std::lock_guard l(mutex_); expire_continue_ = true; }
  // SubjectAccessReviews (POST): these users may list secrets in their own
  // namespace (system:serviceaccount:NS:SA), nobody else anything.
  void allowSecretListing(std::vector<std::string> users) { std::lock_guard l(mutex_); secret_listers_ = std::move(users); }
  Result<HttpResponse> post(const std::string& target, const std::string& body);

  [[nodiscard]] std::vector<std::string> requests() const;
  [[nodiscard]] std::size_t openWatches() const;

  Result<std::unique_ptr<HttpTransport>> open() override;
  std::string server() const override { return "https://fake"; }

  // Called by the transports.
  Result<HttpResponse> handle(const std::string& target, const std::string& token,
                              const std::function<bool(std::string_view)>* on_data);

 private:
  HttpResponse list(const std::string& path, const std::map<std::string, std::string>& query);
  bool selected(const json& object, const std::map<std::string, std::string>& query) const;
  void record(const std::string& path, const std::string& type, json object);

  mutable std::mutex mutex_;
  std::condition_variable cv_;
  int64_t rv_ = 100;
  std::map<std::string, Collection> collections_;
  std::map<std::string, std::vector<std::string>> groups_;
  std::map<std::string, int> forced_;
  std::map<std::string, int64_t> expired_at_;  // path → watches from before this rv get 410
  std::string token_;
  bool expire_continue_ = false;
  uint64_t close_generation_ = 0;
  std::size_t open_watches_ = 0;
  std::vector<std::string> requests_;
  std::vector<std::string> secret_listers_;
};

}  // namespace meshlock::config::kube::testing
