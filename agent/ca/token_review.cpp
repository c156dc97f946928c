// TokenReview requests and answers (token_review.h).
#include "ca/token_review.h"

#include <openssl/sha.h>

#include <nlohmann/json.hpp>

#include <algorithm>

namespace meshlock::ca {
namespace {

constexpr std::string_view kTokenReviewPath = "/apis/authentication.k8s.io/v1/tokenreviews";
constexpr std::string_view kPodNameExtra = "authentication.kubernetes.io/pod-name";
constexpr std::string_view kPodUidExtra = "authentication.kubernetes.io/pod-uid";

TokenRejection rejection(std::string reason, std::string message) {
  return TokenRejection{std::move(reason), std::move(message)};
}

std::string firstExtra(const nlohmann::json& extra, std::string_view key) {
  auto it = extra.find(std::string(key));
  if (it == extra.end() || !it->is_array() || it->empty() || !it->front().is_string()) return {};
  return it->front().get<std::string>();
}

std::string digestOf(const std::string& token) {
  uint8_t digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const uint8_t*>(token.data()), token.size(), digest);
  return std::string(reinterpret_cast<const char*>(digest), sizeof digest);
}

}  // namespace

std::string tokenReviewRequest(std::string_view token, const std::vector<std::string>& audiences) {
  nlohmann::json spec = {{"token", token}};
  if (!audiences.empty()) spec["audiences"] = audiences;
  return nlohmann::json{{"apiVersion", "authentication.k8s.io/v1"}, {"kind", "TokenReview"}, {"spec", spec}}.dump();
}

TokenReviewResult parseTokenReview(std::string_view body, const std::vector<std::string>& audiences) {
  auto doc = nlohmann::json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded() || !doc.is_object()) return std::unexpected(rejection("api_error", "TokenReview answer is not JSON"));
  const nlohmann::json status = doc.value("status", nlohmann::json::object());
  if (!status.is_object()) return std::unexpected(rejection("api_error", "TokenReview answer without status"));
  if (auto error = status.find("error"); error != status.end() && error->is_string() && !error->get<std::string>().empty())
    return std::unexpected(rejection("not_authenticated", "the token review says: " + error->get<std::string>()));
  if (status.value("authenticated", false) != true)
    return std::unexpected(rejection("not_authenticated", "the token is not authenticated"));
  if (!audiences.empty()) {
    const auto granted = status.value("audiences", nlohmann::json::array());
    const bool met = granted.is_array() && std::any_of(granted.begin(), granted.end(), [&](const nlohmann::json& a) {
      return a.is_string() && std::find(audiences.begin(), audiences.end(), a.get<std::string>()) != audiences.end();
    });
    if (!met) return std::unexpected(rejection("wrong_audience", "the token is not meant for this CA's audience"));
  }
  const nlohmann::json user = status.value("user", nlohmann::json::object());
  const nlohmann::json groups = user.is_object() ? user.value("groups", nlohmann::json::array()) : nlohmann::json::array();
  const bool service_account = groups.is_array() && std::any_of(groups.begin(), groups.end(), [](const nlohmann::json& g) {
    return g.is_string() && g.get<std::string>() == "system:serviceaccounts";
  });
  if (!service_account) return std::unexpected(rejection("not_service_account", "the token is not a service account's"));
  const std::string username = user.is_object() ? user.value("username", std::string()) : std::string();
  // "system:serviceaccount:NS:SA", exactly four parts.
  std::vector<std::string> parts;
  for (std::size_t start = 0;;) {
    const std::size_t colon = username.find(':', start);
    parts.push_back(username.substr(start, colon == std::string::npos ? std::string::npos : colon - start));
    if (colon == std::string::npos) break;
    start = colon + 1;
  }
  if (parts.size() != 4 || parts[0] != "system" || parts[1] != "serviceaccount" || parts[2].empty() || parts[3].empty())
    return std::unexpected(rejection("not_service_account", "invalid username \"" + username + "\" in the token review"));
  ReviewedToken out{.ns = parts[2], .service_account = parts[3], .pod_name = {}, .pod_uid = {}};
  if (const auto extra = user.value("extra", nlohmann::json::object()); extra.is_object()) {
    out.pod_name = firstExtra(extra, kPodNameExtra);
    out.pod_uid = firstExtra(extra, kPodUidExtra);
  }
  return out;
}

KubeTokenReviewer::KubeTokenReviewer(std::shared_ptr<config::kube::TransportFactory> transports,
                                     std::shared_ptr<config::kube::BearerToken> credentials,
                                     KubeTokenReviewerOptions options)
    : transports_(std::move(transports)), credentials_(std::move(credentials)), options_(std::move(options)) {}

TokenReviewResult KubeTokenReviewer::review(const std::string& token) {
  if (token.empty()) return std::unexpected(rejection("no_token", "no bearer token"));
  const std::string digest = digestOf(token);
  const auto now = std::chrono::steady_clock::now();
  {
    std::lock_guard lock(mutex_);
    if (auto it = cache_.find(digest); it != cache_.end()) {
      if (it->second->until > now) {
        lru_.splice(lru_.begin(), lru_, it->second);
        return it->second->token;
      }
      lru_.erase(it->second);
      cache_.erase(it);
    }
  }
  auto answer = ask(token);
  if (!answer || options_.cache_ttl.count() <= 0) return answer;
  std::lock_guard lock(mutex_);
  if (cache_.contains(digest)) return answer;
  lru_.push_front(Cached{digest, *answer, now + options_.cache_ttl});
  cache_[digest] = lru_.begin();
  while (cache_.size() > options_.cache_entries) {
    cache_.erase(lru_.back().digest);
    lru_.pop_back();
  }
  return answer;
}

TokenReviewResult KubeTokenReviewer::ask(const std::string& token) {
  auto transport = takeTransport();
  if (!transport) return std::unexpected(rejection("api_error", "cannot reach the Kubernetes API at " + transports_->server()));
  const std::string body = tokenReviewRequest(token, options_.audiences);
  auto response = transport->send("POST", std::string(kTokenReviewPath), credentials_->current(), body);
  if (response && response->status == 401 && credentials_->refresh())
    response = transport->send("POST", std::string(kTokenReviewPath), credentials_->current(), body);
  if (!response)
    return std::unexpected(rejection("api_error", "TokenReview at " + transports_->server() + ": " + response.error().describe()));
  giveBack(std::move(transport));
  if (response->status == 403)
    return std::unexpected(rejection("api_error", "the CA may not create TokenReviews (RBAC: create tokenreviews.authentication.k8s.io)"));
  if (response->status / 100 != 2)
    return std::unexpected(rejection("api_error", "TokenReview answered HTTP " + std::to_string(response->status)));
  return parseTokenReview(response->body, options_.audiences);
}

std::unique_ptr<config::kube::HttpTransport> KubeTokenReviewer::takeTransport() {
  {
    std::lock_guard lock(mutex_);
    if (!idle_.empty()) {
      auto transport = std::move(idle_.back());
      idle_.pop_back();
      return transport;
    }
  }
  auto opened = transports_->open();
  return opened ? std::move(*opened) : nullptr;
}

void KubeTokenReviewer::giveBack(std::unique_ptr<config::kube::HttpTransport> transport) {
  constexpr std::size_t kMaxIdle = 8;
  std::lock_guard lock(mutex_);
  if (idle_.size() < kMaxIdle) idle_.push_back(std::move(transport));
}

}  // namespace meshlock::ca
