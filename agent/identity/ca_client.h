// A client of Istio's CA API (istio.v1.auth.IstioCertificateService/
// CreateCertificate), as istiod serves it on :15012: the key is generated
// here, only a CSR goes out, and the answer is checked before it is used.
// Blocking; one per worker thread (IdentityManager runs them).
#pragma once

#include <chrono>
#include <expected>
#include <filesystem>
#include <memory>
#include <string>

#include "common/error.h"
#include "grpc/client.h"
#include "identity/mesh_ca.h"
#include "identity/spiffe_id.h"
#include "identity/trust_bundle.h"

namespace meshlock::identity {

inline constexpr const char* kCreateCertificatePath = "/istio.v1.auth.IstioCertificateService/CreateCertificate";
// istio/istio pkg/security/security.go: the metadata key istiod's node
// authorizer checks (security/pkg/server/ca/server.go, node_auth.go).
inline constexpr const char* kImpersonatedIdentityKey = "ImpersonatedIdentity";

struct CaClientConfig {
  std::string address = "istiod.istio-system.svc:15012";
  std::string serverName;  // the name istiod's certificate must carry; empty: the address's host
  // The mesh root the CA's serving certificate and our certificates chain
  // to (istiod's istio-ca-root-cert ConfigMap, key root-cert.pem, mounted as a file).
  std::filesystem::path rootFile = "/var/run/secrets/istio/root-cert.pem";
  // A projected service-account token with audience istio-ca; re-read on
  // every call because the kubelet rotates it.
  std::filesystem::path tokenFile = "/var/run/secrets/tokens/istio-token";
  std::string clusterId = "Kubernetes";  // the "clusterid" header (ztunnel src/identity/auth.rs)
  // Ask for the workload's identity as its node agent (ImpersonatedIdentity);
  // off: istiod signs the caller's own identity.
  bool impersonate = true;
  std::chrono::milliseconds timeout{10000};
};

// Why a request failed. `reason` is a metric label: a gRPC code in snake_case
// ("unauthenticated", "permission_denied", "deadline_exceeded",
// "unavailable", ...), "invalid_response" (an answer we refused) or
// "local" (token or root file unreadable, key or CSR generation).
struct CaError {
  std::string reason;
  std::string message;
  [[nodiscard]] std::string describe() const { return message; }
};

class CaClient {
 public:
  [[nodiscard]] static Result<std::unique_ptr<CaClient>> create(CaClientConfig config, TrustDomain trustDomain);

  // A new key, a CSR for `id`, CreateCertificate, and the answer checked:
  // every PEM parses, the leaf has our public key and exactly the SAN `id`,
  // the chain leads to a root of rootFile and is valid at `now`.
  [[nodiscard]] std::expected<WorkloadCertificate, CaError> fetch(const SpiffeId& id, std::chrono::seconds lifetime,
                                                                 Seconds now);

  [[nodiscard]] const CaClientConfig& config() const { return config_; }

 private:
  CaClient(CaClientConfig config, TrustDomain trustDomain);
  // (Re)reads rootFile when it changed: a new bundle and channel.
  std::expected<void, CaError> refreshRoots();

  CaClientConfig config_;
  TrustDomain trustDomain_;
  grpc::Endpoint endpoint_;
  std::string rootSignature_;
  std::shared_ptr<const TrustBundle> bundle_;
  std::unique_ptr<grpc::UnaryChannel> channel_;
};

// Checks an IstioCertificateResponse's chain for `id` and `key` against
// `bundle` (what fetch does with the answer); the leaf first, root last.
[[nodiscard]] std::expected<WorkloadCertificate, CaError> acceptIssuedChain(
    const std::vector<std::string>& certChain, const SpiffeId& id, bssl::UniquePtr<EVP_PKEY> key,
    const TrustBundle& bundle, const TrustDomain& trustDomain, Seconds now);

// "ino:size:mtime" of a file, "absent" when it is not there: a change check.
[[nodiscard]] std::string fileSignature(const std::filesystem::path& path);

}  // namespace meshlock::identity
