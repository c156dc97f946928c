// `meshlock-agent ca`'s CreateCertificate (Istio's CA API): authenticate the
// caller's token with a TokenReview, authorize node-wise (node_authorizer.h),
// sign the CSR's public key with the one CA key in the cluster, answer the
// chain leaf first, root last — as istiod's CA server does (istio/istio
// security/pkg/server/ca/server.go at 86c9f01f). Every refusal is counted and
// logged with its reason.
#pragma once

#include <chrono>
#include <expected>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "ca/node_authorizer.h"
#include "ca/token_review.h"
#include "grpc/framing.h"
#include "identity/mesh_ca.h"
#include "identity/spiffe_id.h"

namespace meshlock::ca {

struct CaServiceConfig {
  identity::TrustDomain trust_domain = *identity::TrustDomain::parse("cluster.local");  // Istio's default
  // "namespace/serviceaccount" of the node agents (istiod: CA_TRUSTED_NODE_ACCOUNTS).
  std::vector<std::string> trusted_node_accounts{"meshlock-system/meshlock-agent"};
  // istiod's DEFAULT_WORKLOAD_CERT_TTL and MAX_WORKLOAD_CERT_TTL.
  std::chrono::seconds default_ttl{std::chrono::hours(24)};
  std::chrono::seconds max_ttl{std::chrono::hours(24 * 90)};
  // Per caller (one node agent, one pod): a token bucket.
  double rate_per_second = 100;
  double burst = 500;
};

// What CreateCertificate needs of one call (a gRPC server's call, reduced).
struct CertificateCall {
  std::string request;        // the IstioCertificateRequest message
  std::string authorization;  // the "authorization" metadata ("Bearer …")
  std::string peer;           // for the log
};

class CaService {
 public:
  using Clock = std::function<identity::Seconds()>;
  using Pods = std::function<std::shared_ptr<const PodDirectory>()>;

  CaService(CaServiceConfig config, std::shared_ptr<const identity::MeshCa> ca, std::shared_ptr<TokenReviewer> reviewer,
            Pods pods, Clock clock);

  // The IstioCertificateResponse, or the status to answer.
  [[nodiscard]] std::expected<std::string, grpc::GrpcStatus> createCertificate(const CertificateCall& call);

  // Calls by outcome: "issued", or the refusal's reason.
  [[nodiscard]] std::map<std::string, uint64_t> outcomes() const;

 private:
  std::expected<std::string, grpc::GrpcStatus> decide(const CertificateCall& call, std::string& outcome,
                                                      std::string& subject);
  bool admit(const std::string& caller);

  CaServiceConfig config_;
  std::shared_ptr<const identity::MeshCa> ca_;
  std::shared_ptr<TokenReviewer> reviewer_;
  Pods pods_;
  Clock clock_;
  mutable std::mutex mutex_;
  std::map<std::string, uint64_t> outcomes_;
  struct Bucket {
    double tokens;
    std::chrono::steady_clock::time_point at;
  };
  std::unordered_map<std::string, Bucket> buckets_;
};

}  // namespace meshlock::ca
