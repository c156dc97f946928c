// CreateCertificate (ca_service.h).
#include "ca/ca_service.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>

#include "identity/ca_client.h"
#include "identity/csr.h"
#include "identity/proto/ca.pb.h"
#include "identity/x509_util.h"

namespace meshlock::ca {
namespace {

using grpc::GrpcStatus;
using grpc::StatusCode;

std::string hostOf(const std::string& peer) {
  // "10.0.0.1:5555" or "[fd00::1]:5555": the caller's address without the port.
  if (peer.starts_with('[')) return peer.substr(0, peer.find(']') + 1);
  return peer.substr(0, peer.rfind(':'));
}

std::string durationText(std::chrono::seconds s) {
  return fmt::format("{}h{}m{}s", s.count() / 3600, s.count() / 60 % 60, s.count() % 60);
}

}  // namespace

CaService::CaService(CaServiceConfig config, std::shared_ptr<const identity::MeshCa> ca,
                     std::shared_ptr<TokenReviewer> reviewer, Pods pods, Clock clock)
    : config_(std::move(config)), ca_(std::move(ca)), reviewer_(std::move(reviewer)), pods_(std::move(pods)),
      clock_(std::move(clock)) {}

std::expected<std::string, GrpcStatus> CaService::createCertificate(const CertificateCall& call) {
  std::string outcome;
  std::string subject = "?";
  auto answer = decide(call, outcome, subject);
  {
    std::lock_guard lock(mutex_);
    ++outcomes_[outcome];
  }
  if (answer) {
    spdlog::info("ca: issued {} to {}", subject, call.peer);
  } else {
    spdlog::warn("ca: refused {} from {} ({}): {}", subject, call.peer, outcome, answer.error().message);
  }
  return answer;
}

std::expected<std::string, GrpcStatus> CaService::decide(const CertificateCall& call, std::string& outcome,
                                                         std::string& subject) {
  auto refuse = [&](std::string reason, StatusCode code, std::string message) {
    outcome = std::move(reason);
    return std::unexpected(GrpcStatus{code, std::move(message)});
  };
  // Before anything costs the API server or a signature.
  if (!admit(hostOf(call.peer)))
    return refuse("rate_limited", StatusCode::kResourceExhausted, "too many certificate requests from " + hostOf(call.peer));

  istio::v1::auth::IstioCertificateRequest request;
  if (!request.ParseFromString(call.request))
    return refuse("bad_request", StatusCode::kInvalidArgument, "not an IstioCertificateRequest");

  // security.ExtractBearerToken: the "authorization" metadata, "Bearer " prefix.
  constexpr std::string_view kBearer = "Bearer ";
  if (!call.authorization.starts_with(kBearer))
    return refuse("no_token", StatusCode::kUnauthenticated, "request authenticate failure: no bearer token");
  auto caller = reviewer_->review(call.authorization.substr(kBearer.size()));
  if (!caller)
    return refuse(caller.error().reason, StatusCode::kUnauthenticated,
                  "request authenticate failure: " + caller.error().message);
  subject = caller->account();
  auto callerId = identity::SpiffeId::forServiceAccount(config_.trust_domain, caller->ns, caller->service_account);
  if (!callerId) return refuse("bad_identity", StatusCode::kUnauthenticated, callerId.error().describe());

  // A node agent asks for a workload's identity; anyone else gets its own.
  identity::SpiffeId id = *callerId;
  const auto& fields = request.metadata().fields();
  if (auto it = fields.find(identity::kImpersonatedIdentityKey); it != fields.end()) {
    if (!it->second.has_string_value())
      return refuse("bad_identity", StatusCode::kInvalidArgument, "ImpersonatedIdentity is not a string");
    auto requested = identity::SpiffeId::parse(it->second.string_value());
    if (!requested)
      return refuse("bad_identity", StatusCode::kInvalidArgument,
                    fmt::format("failed to validate impersonated identity {}: {}", it->second.string_value(),
                                requested.error().describe()));
    subject = fmt::format("{} for {}", requested->uri(), caller->account());
    std::shared_ptr<const PodDirectory> pods = pods_();
    if (!pods) return refuse("not_synced", StatusCode::kUnavailable, "the CA has not listed the cluster's pods yet");
    Decision decision = authorizeImpersonation(*caller, *requested, config_.trust_domain,
                                               config_.trusted_node_accounts, *pods);
    if (!decision.allowed) return refuse(decision.reason, StatusCode::kPermissionDenied, decision.message);
    id = *requested;
  } else {
    subject = id.uri();
  }

  // IstioCA.sign: no lifetime asked is the default; more than the maximum is refused, not cut.
  std::chrono::seconds ttl(request.validity_duration());
  if (ttl.count() <= 0) ttl = config_.default_ttl;
  if (ttl > config_.max_ttl)
    return refuse("bad_ttl", StatusCode::kInvalidArgument,
                  fmt::format("requested TTL {} is greater than the max allowed TTL {}", durationText(ttl),
                              durationText(config_.max_ttl)));
  auto csr = identity::parseCsrPem(request.csr());
  if (!csr) return refuse("bad_csr", StatusCode::kInvalidArgument, "CSR signing error (" + csr.error().describe() + ")");
  auto leaf = ca_->sign(csr->publicKey.get(), id, clock_(), ttl);
  if (!leaf) return refuse("signing_failed", StatusCode::kInternal, "CSR signing error (" + leaf.error().describe() + ")");

  // Leaf first, one certificate per element, the root(s) last (server.go; ztunnel wants one per string).
  istio::v1::auth::IstioCertificateResponse response;
  response.add_cert_chain(identity::certificatePem(leaf->leaf.get()));
  for (const auto& cert : ca_->chain()) response.add_cert_chain(identity::certificatePem(cert.get()));
  std::string roots;
  for (const auto& root : ca_->roots()) roots += identity::certificatePem(root.get());
  response.add_cert_chain(roots);
  std::string bytes;
  if (!response.SerializeToString(&bytes)) return refuse("signing_failed", StatusCode::kInternal, "serializing the response");
  outcome = "issued";
  return bytes;
}

bool CaService::admit(const std::string& caller) {
  const auto now = std::chrono::steady_clock::now();
  std::lock_guard lock(mutex_);
  // Bound the table: forget callers whose buckets are full again.
  if (buckets_.size() > 65536) {
    std::erase_if(buckets_, [&](const auto& entry) {
      const double seconds = std::chrono::duration<double>(now - entry.second.at).count();
      return entry.second.tokens + seconds * config_.rate_per_second >= config_.burst;
    });
  }
  auto [it, fresh] = buckets_.try_emplace(caller, Bucket{config_.burst, now});
  Bucket& bucket = it->second;
  const double seconds = std::chrono::duration<double>(now - bucket.at).count();
  bucket.tokens = std::min(config_.burst, bucket.tokens + seconds * config_.rate_per_second);
  bucket.at = now;
  if (bucket.tokens < 1) return false;
  bucket.tokens -= 1;
  return true;
}

std::map<std::string, uint64_t> CaService::outcomes() const {
  std::lock_guard lock(mutex_);
  return outcomes_;
}

}  // namespace meshlock::ca
