// Who a bearer token belongs to, asked of the Kubernetes API with a
// TokenReview (authentication.k8s.io/v1), as istiod's CA does
// (istio/istio security/pkg/k8s/tokenreview/k8sauthn.go, kubeauth/kube_jwt.go).
#pragma once

#include <chrono>
#include <cstddef>
#include <expected>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "config/kube/endpoint.h"
#include "config/kube/transport.h"

namespace meshlock::ca {

// A service account's token, as the API server vouched for it.
struct ReviewedToken {
  std::string ns;               // from "system:serviceaccount:NS:SA"
  std::string service_account;
  // The pod a projected token is bound to (status.user.extra
  // "authentication.kubernetes.io/pod-name" and "pod-uid"); empty for a
  // token that is not bound to a pod.
  std::string pod_name;
  std::string pod_uid;
  [[nodiscard]] std::string account() const { return ns + "/" + service_account; }
};

// Why a token was not accepted; `reason` is a metric label.
struct TokenRejection {
  std::string reason;   // "not_authenticated", "not_service_account", "api_error", ...
  std::string message;
};
using TokenReviewResult = std::expected<ReviewedToken, TokenRejection>;

// The request body for `token`, asking for `audiences` (empty: the API
// server's own). Pure; tested with tables.
[[nodiscard]] std::string tokenReviewRequest(std::string_view token, const std::vector<std::string>& audiences);
// Reads a TokenReview answer in istiod's order of checks: status.error,
// authenticated, the group system:serviceaccounts, a username of four
// colon-separated parts. Also requires, unlike istiod, that status.audiences
// meets `audiences` when some were asked for (authentication/v1 types.go:
// "clients ... should verify" them).
[[nodiscard]] TokenReviewResult parseTokenReview(std::string_view body, const std::vector<std::string>& audiences);

class TokenReviewer {
 public:
  virtual ~TokenReviewer() = default;
  [[nodiscard]] virtual TokenReviewResult review(const std::string& token) = 0;
};

struct KubeTokenReviewerOptions {
  std::vector<std::string> audiences{"istio-ca"};
  // An accepted token is trusted again for this long without asking; a
  // refused one is asked again every time (it may be a pod not yet known).
  std::chrono::seconds cache_ttl{60};
  std::size_t cache_entries = 4096;
};

// TokenReviews over the CA's own connection to the API server, its own token
// as the bearer. Thread-safe: each call takes an idle transport (or opens one).
class KubeTokenReviewer final : public TokenReviewer {
 public:
  KubeTokenReviewer(std::shared_ptr<config::kube::TransportFactory> transports,
                    std::shared_ptr<config::kube::BearerToken> credentials, KubeTokenReviewerOptions options);
  [[nodiscard]] TokenReviewResult review(const std::string& token) override;

 private:
  TokenReviewResult ask(const std::string& token);
  std::unique_ptr<config::kube::HttpTransport> takeTransport();
  void giveBack(std::unique_ptr<config::kube::HttpTransport> transport);

  std::shared_ptr<config::kube::TransportFactory> transports_;
  std::shared_ptr<config::kube::BearerToken> credentials_;
  KubeTokenReviewerOptions options_;
  std::mutex mutex_;
  std::vector<std::unique_ptr<config::kube::HttpTransport>> idle_;
  // SHA-256 of the token → answer, least recently used at the back.
  struct Cached {
    std::string digest;
    ReviewedToken token;
    std::chrono::steady_clock::time_point until;
  };
  std::list<Cached> lru_;
  std::unordered_map<std::string, std::list<Cached>::iterator> cache_;
};

}  // namespace meshlock::ca
